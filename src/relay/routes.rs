//! Which destination topics a file goes to: `--to-topic` (with `--match`) or Fink-style
//! `--route REGEX=TOPIC` lines, matched against the file's relative path (`/`-separated, as
//! `--upload-regex` and `--download-regex` see it).

use regex::Regex;

/// One `--route`: files whose relative path matches `regex` go to `topic`.
#[derive(Debug, Clone)]
pub struct Route {
    /// None: every file (`--to-topic` without `--match`).
    pub regex: Option<Regex>,
    /// The destination topic.
    pub topic: String,
}

/// Why a `--route` value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("--route {0:?}: expected REGEX=TOPIC (e.g. --route '\\.tif$=images')")]
    NoTopic(String),
    #[error("--route {value:?}: the regular expression is invalid: {reason}")]
    BadRegex { value: String, reason: String },
    #[error("--route {value:?}: {topic:?} is not a Kafka topic name (letters, digits, '.', '_' and '-', at most 249)")]
    BadTopic { value: String, topic: String },
}

/// Kafka's rule for topic names.
fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses one `--route REGEX=TOPIC`. A topic name cannot contain `=`, so the value is split at
/// its last `=` and the regular expression may contain `=` itself.
pub fn parse_route(value: &str) -> Result<Route, RouteError> {
    let Some((pattern, topic)) = value.rsplit_once('=') else {
        return Err(RouteError::NoTopic(value.to_string()));
    };
    if !is_topic_name(topic) {
        return Err(if topic.is_empty() {
            RouteError::NoTopic(value.to_string())
        } else {
            RouteError::BadTopic {
                value: value.to_string(),
                topic: topic.to_string(),
            }
        });
    }
    let regex = Regex::new(pattern).map_err(|e| RouteError::BadRegex {
        value: value.to_string(),
        // The regex crate's message spans lines (a caret under the error): one line here.
        reason: e
            .to_string()
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .trim_start_matches("error: ")
            .to_string(),
    })?;
    Ok(Route {
        regex: Some(regex),
        topic: topic.to_string(),
    })
}

/// The routes of a relay, and the distinct destination topics they name (in first-use order).
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
    topics: Vec<String>,
}

impl Routes {
    /// Routes from their parsed lines.
    pub fn new(routes: Vec<Route>) -> Self {
        let mut topics: Vec<String> = Vec::new();
        for r in &routes {
            if !topics.contains(&r.topic) {
                topics.push(r.topic.clone());
            }
        }
        Routes { routes, topics }
    }

    /// The distinct destination topics.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Indices (into [`Routes::topics`]) of every topic a file with `relative` path goes to,
    /// each once; empty when no route matches.
    pub fn destinations(&self, relative: &str) -> Vec<usize> {
        let mut out = Vec::new();
        for route in &self.routes {
            if route.regex.as_ref().is_none_or(|re| re.is_match(relative)) {
                let i = self
                    .topics
                    .iter()
                    .position(|t| *t == route.topic)
                    .expect("every route's topic is listed");
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_splits_at_its_last_equals_sign() {
        let r = parse_route("a=b/.*\\.json$=fink_json_ztf").unwrap();
        assert_eq!(r.topic, "fink_json_ztf");
        assert!(r.regex.unwrap().is_match("a=b/x.json"));
    }

    #[test]
    fn bad_routes_say_what_is_wrong_in_one_line() {
        assert_eq!(
            parse_route("nothing").unwrap_err(),
            RouteError::NoTopic("nothing".into())
        );
        assert_eq!(
            parse_route("x=").unwrap_err(),
            RouteError::NoTopic("x=".into())
        );
        assert!(matches!(
            parse_route("a=to pic"),
            Err(RouteError::BadTopic { .. })
        ));
        let e = parse_route("(unclosed=t").unwrap_err();
        assert!(matches!(e, RouteError::BadRegex { .. }));
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().contains("unclosed"), "{e}");
    }

    #[test]
    fn a_file_goes_to_every_matching_topic_once() {
        let routes = Routes::new(vec![
            parse_route("\\.tif$=images").unwrap(),
            parse_route("^lab1/=lab1").unwrap(),
            parse_route("^lab1/.*\\.tif$=images").unwrap(),
        ]);
        assert_eq!(routes.topics(), ["images", "lab1"]);
        assert_eq!(routes.destinations("lab1/a.tif"), vec![0, 1]);
        assert_eq!(routes.destinations("lab2/a.tif"), vec![0]);
        assert!(routes.destinations("lab2/a.txt").is_empty());
        let all = Routes::new(vec![Route {
            regex: None,
            topic: "t".into(),
        }]);
        assert_eq!(all.destinations("anything"), vec![0]);
    }
}
