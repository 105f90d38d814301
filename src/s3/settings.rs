//! Where the bucket's server is and who we are to it: OpenMSIStream's `[s3]` section, with its
//! key names (`endpoint_url`, `access_key_id`, `secret_key_id`, `region`) so its config files
//! work unchanged, else the standard AWS environment variables.

use url::Url;

use crate::config::{ConfigError, LoadedConfig};

/// Region when neither the section nor the environment names one (what AWS's tools assume).
pub const DEFAULT_REGION: &str = "us-east-1";

/// The S3 endpoint and credentials.
#[derive(Clone)]
pub struct S3Settings {
    /// Base URL of the server (`https://` added when the setting has no scheme).
    pub endpoint: Url,
    /// Signing region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// The secret key.
    pub secret_key: String,
    /// Where the secret came from, for the message a refused signature gives ("secret_key_id
    /// in [s3] of /etc/lab.config line 7", or the environment variable).
    pub secret_origin: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_origin", &self.secret_origin)
            .finish_non_exhaustive()
    }
}

/// Why the S3 settings cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum S3SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what} is not set: add `{key} = ...` to the [s3] section of {config}, or set {env}")]
    Missing {
        what: &'static str,
        key: &'static str,
        env: &'static str,
        config: String,
    },
    #[error("{origin}: {value:?} is not a URL ({reason}); write e.g. `endpoint_url = https://s3.example.org:9000`")]
    BadEndpoint {
        origin: String,
        value: String,
        reason: String,
    },
}

impl S3Settings {
    /// From the `[s3]` section of `config`, each missing key taken from the environment
    /// (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` or `AWS_DEFAULT_REGION`) through `env`. Without
    /// any endpoint, AWS's own for the region.
    pub fn from_config(
        config: &LoadedConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, S3SettingsError> {
        let section = config.checked_section("s3")?;
        let file = config.path().display().to_string();
        let from_section = |key: &str| -> Option<(String, String)> {
            let section = section?;
            let value = section.get(key)?.trim();
            (!value.is_empty()).then(|| {
                let line = section.line_of(key).unwrap_or(0);
                (
                    value.to_string(),
                    format!("{key} in [s3] of {file} line {line}"),
                )
            })
        };
        let from_env = |names: &[&str]| -> Option<(String, String)> {
            names.iter().find_map(|name| {
                env(name).filter(|v| !v.trim().is_empty()).map(|v| {
                    (
                        v.trim().to_string(),
                        format!("the environment variable {name}"),
                    )
                })
            })
        };
        let missing = |what, key, env| S3SettingsError::Missing {
            what,
            key,
            env,
            config: file.clone(),
        };
        let (access_key_id, _) = from_section("access_key_id")
            .or_else(|| from_env(&["AWS_ACCESS_KEY_ID"]))
            .ok_or_else(|| missing("the S3 access key", "access_key_id", "AWS_ACCESS_KEY_ID"))?;
        let (secret_key, secret_origin) = from_section("secret_key_id")
            .or_else(|| from_env(&["AWS_SECRET_ACCESS_KEY"]))
            .ok_or_else(|| {
                missing(
                    "the S3 secret key",
                    "secret_key_id",
                    "AWS_SECRET_ACCESS_KEY",
                )
            })?;
        let region = from_section("region")
            .or_else(|| from_env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
            .map_or_else(|| DEFAULT_REGION.to_string(), |(v, _)| v);
        let (endpoint, origin) = from_section("endpoint_url")
            .or_else(|| from_env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]))
            .unwrap_or_else(|| {
                (
                    format!("https://s3.{region}.amazonaws.com"),
                    "the default AWS endpoint".to_string(),
                )
            });
        Ok(Self {
            endpoint: endpoint_url(&endpoint, &origin)?,
            region,
            access_key_id,
            secret_key,
            secret_origin,
        })
    }
}

/// `value` as a URL, `https://` added when it has no scheme (as OpenMSIStream does).
fn endpoint_url(value: &str, origin: &str) -> Result<Url, S3SettingsError> {
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("https://{value}")
    };
    let bad = |reason: String| S3SettingsError::BadEndpoint {
        origin: origin.to_string(),
        value: value.to_string(),
        reason,
    };
    let url = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {} is neither http nor https",
            url.scheme()
        )));
    }
    if url.host_str().is_none() {
        return Err(bad("it names no host".into()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> LoadedConfig {
        LoadedConfig::from_reader(Path::new("lab.config"), text.as_bytes(), &|_| None).unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn openmsistreams_section_is_read_with_its_key_names() {
        let config = load(
            "[broker]\nbootstrap.servers = x:9092\n\n[s3]\naccess_key_id = AK\nsecret_key_id = SK\nendpoint_url = s3.lab.org:9000\nregion = eu-west-3\n",
        );
        let s = S3Settings::from_config(&config, &no_env).unwrap();
        assert_eq!(s.endpoint.as_str(), "https://s3.lab.org:9000/");
        assert_eq!(s.region, "eu-west-3");
        assert_eq!(
            (s.access_key_id.as_str(), s.secret_key.as_str()),
            ("AK", "SK")
        );
        assert_eq!(
            s.secret_origin,
            "secret_key_id in [s3] of lab.config line 6"
        );
        assert!(
            !format!("{s:?}").contains("SK"),
            "the secret is never printed"
        );
    }

    #[test]
    fn without_a_section_the_aws_environment_variables_are_used() {
        let config = load("[broker]\nbootstrap.servers = x:9092\n");
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000".to_string()),
            _ => None,
        };
        let s = S3Settings::from_config(&config, &env).unwrap();
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(s.region, DEFAULT_REGION);
        assert_eq!(
            s.secret_origin,
            "the environment variable AWS_SECRET_ACCESS_KEY"
        );
        let only_keys = |name: &str| env(name).filter(|_| name != "AWS_ENDPOINT_URL");
        let aws = S3Settings::from_config(&config, &only_keys).unwrap();
        assert_eq!(aws.endpoint.as_str(), "https://s3.us-east-1.amazonaws.com/");
    }

    #[test]
    fn a_missing_secret_or_a_bad_endpoint_says_what_to_write() {
        let config = load("[s3]\naccess_key_id = AK\n");
        let e = S3Settings::from_config(&config, &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secret_key_id") && e.contains("AWS_SECRET_ACCESS_KEY"),
            "{e}"
        );
        let config = load("[s3]\naccess_key_id = AK\nsecret_key_id = SK\nendpoint_url = ftp://x\n");
        let e = S3Settings::from_config(&config, &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("endpoint_url in [s3] of lab.config line 4"),
            "{e}"
        );
    }
}
