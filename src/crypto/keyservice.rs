//! The key exchange on Kafka, one background thread per process: answers key requests for the
//! roots this node produces to (from the keys it made in this process and those in the node's
//! key store, so keys outlive the process that made them), and fetches the keys this process
//! needs to decrypt, re-asking with a growing interval while none arrives.
//!
//! Topics, per root topic R (the topic name up to its first `.`): `R.reqs` (requests, read by
//! producers), `R.subs` (requests, for controllers), `R.keys` (replies), each read and written
//! on partition 0 as KafkaCrypto does. Replies are read from where `R.keys` ended when this
//! process first needed a key of R (looked up before its first request is sent, so no reply to
//! it can be missed); requests from where `R.reqs` ended when serving began (requesters ask
//! again until answered).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::chain::Trust;
use super::exchange::{
    accept_reply, answer_request, make_request, ExchangeError, Identity, PendingRequest,
};
use super::globals;
use super::keystore;
use super::node::Node;
use super::nodeconf::encode_bytes;
use super::primitives::Secret;
use crate::config::LoadedConfig;
use crate::kafka::client::{client_config, create_client, KafkaSetupError};
use crate::kafka::topic::{check_topic, TopicError};
use crate::kafka::{ConsumerLogContext, LogContext};

/// Suffixes of the key-exchange topics of a root.
pub const EXCHANGE_SUFFIXES: [&str; 3] = [".keys", ".reqs", ".subs"];
/// First re-request after this long without an answer; doubling up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(3);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Requests kept open at once per process (older ones are forgotten).
const MAX_PENDING: usize = 16;
/// The key store is re-read for an unknown key id at most this often.
const STORE_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Unix time now, seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Deployment-wide topics: renewed chains, allowlist and denylist updates (read from their
/// start when they exist).
pub const GLOBAL_TOPICS: [&str; 3] = ["chains", "allowlist", "denylist"];

#[derive(Default)]
struct State {
    /// Global topics that exist (read from their start).
    globals: Vec<String>,
    /// Keys received (or made here), by (root, key id).
    keys: HashMap<(String, [u8; 32]), Secret>,
    /// Key ids needed, by root.
    wanted: HashMap<String, BTreeSet<[u8; 32]>>,
    /// When each root may be asked again, and the wait after that.
    next_request: HashMap<String, (Instant, Duration)>,
    pending: Vec<PendingRequest>,
    /// Roots whose replies are read (`R.keys`), from the offset noted.
    listening: HashMap<String, i64>,
    /// Roots whose requests are answered (`R.reqs`), from the offset noted.
    serving: HashMap<String, i64>,
    /// Keys this node serves, by (root, key id).
    served: HashMap<(String, [u8; 32]), Secret>,
    last_store_reload: Option<Instant>,
    assignment_changed: bool,
}

struct Shared {
    node: Node,
    /// The node's chain and trust, which the global topics can change at run time.
    chain: std::sync::RwLock<Vec<u8>>,
    trust: std::sync::RwLock<Trust>,
    /// Counts keys received.
    generation: std::sync::atomic::AtomicU64,
    /// Counts key replies sent.
    replies: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    arrived: Condvar,
    stop: AtomicBool,
}

/// The running key exchange of one process.
pub struct KeyService {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    consumer: Arc<ExchangeConsumer>,
    producer: Arc<ExchangeProducer>,
}

/// Why the key exchange could not start.
#[derive(Debug, thiserror::Error)]
pub enum KeyServiceError {
    /// A key-exchange topic is missing.
    #[error("the key-exchange topic `{topic}` does not exist: encrypted topics need {needed} (create them with `openmsi topic create NAME --partitions 1` or your cluster's tools; tansu and most managed clusters do not create topics on use)")]
    MissingTopic {
        /// The missing one.
        topic: String,
        /// All the root's exchange topics.
        needed: String,
    },
    /// A client could not be built from the config (a property librdkafka refused).
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// The broker did not answer, or refused.
    #[error(transparent)]
    Kafka(#[from] TopicError),
    /// The exchange's thread could not be started.
    #[error("starting the key-exchange thread: {0}")]
    Thread(std::io::Error),
}

/// The exchange's clients, with the same logging context (and connection diagnosis) as every
/// other client.
type ExchangeProducer = BaseProducer<LogContext>;
type ExchangeConsumer = BaseConsumer<ConsumerLogContext>;

impl KeyService {
    /// Connects the exchange's own producer and consumer (the config's `[broker]` settings)
    /// and checks that every root's exchange topics exist.
    pub fn start(
        node: Node,
        config: &LoadedConfig,
        roots: &[String],
        timeout: Duration,
    ) -> Result<Arc<KeyService>, KeyServiceError> {
        let producer_cfg = client_config(
            &config.producer_properties(),
            &[("linger.ms", "5".into())],
            &[],
        );
        let producer: ExchangeProducer =
            create_client(&producer_cfg, LogContext, config, "key-exchange producer")?;
        let mut consumer_props =
            config.consumer_properties(Some(&format!("openmsi-keys-{}", std::process::id())), true);
        consumer_props.retain(|(k, _)| k != "group.instance.id");
        let consumer_cfg: ClientConfig = client_config(
            &consumer_props,
            &[],
            &[("enable.partition.eof", "false".into())],
        );
        let consumer: ExchangeConsumer = create_client(
            &consumer_cfg,
            ConsumerLogContext::default(),
            config,
            "key-exchange consumer",
        )?;
        for root in roots {
            for suffix in EXCHANGE_SUFFIXES {
                let topic = format!("{root}{suffix}");
                match check_topic(consumer.client(), &consumer_cfg, &topic, timeout, &|| {
                    let _ = consumer.poll(Duration::ZERO);
                }) {
                    Ok(_) => {}
                    Err(TopicError::Missing { .. }) => {
                        return Err(KeyServiceError::MissingTopic {
                            topic,
                            needed: EXCHANGE_SUFFIXES
                                .iter()
                                .map(|s| format!("{root}{s}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let globals: Vec<String> = GLOBAL_TOPICS
            .iter()
            .filter(|t| {
                check_topic(consumer.client(), &consumer_cfg, t, timeout, &|| {
                    let _ = consumer.poll(Duration::ZERO);
                })
                .is_ok()
            })
            .map(|t| t.to_string())
            .collect();
        if globals.len() < GLOBAL_TOPICS.len() {
            debug!(present = ?globals, "not all of the global chains/allowlist/denylist topics exist; changes of trust at run time come only through those that do");
        }
        let shared = Arc::new(Shared {
            chain: std::sync::RwLock::new(node.chains[0].clone()),
            trust: std::sync::RwLock::new(node.trust.clone()),
            node,
            generation: Default::default(),
            replies: Default::default(),
            state: Mutex::new(State {
                globals,
                assignment_changed: true,
                ..State::default()
            }),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let service = Arc::new(KeyService {
            shared,
            thread: Mutex::new(None),
            consumer: Arc::new(consumer),
            producer: Arc::new(producer),
        });
        let (shared, consumer, producer) = (
            Arc::clone(&service.shared),
            Arc::clone(&service.consumer),
            Arc::clone(&service.producer),
        );
        let handle = std::thread::Builder::new()
            .name("key-exchange".into())
            .spawn(move || run(&shared, &consumer, &producer))
            .map_err(KeyServiceError::Thread)?;
        *crate::sync::lock(&service.thread) = Some(handle);
        Ok(service)
    }

    /// The node this process runs as.
    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    /// Starts answering requests for `root`, with `current` (the key this process encrypts
    /// with) and every key of the root in the node's key store.
    pub fn serve(&self, root: &str, current: Option<([u8; 32], Secret)>) {
        let mut state = crate::sync::lock(&self.shared.state);
        if let Some((id, secret)) = current {
            state.served.insert((root.to_owned(), id), secret.clone());
            state.keys.insert((root.to_owned(), id), secret);
        }
        reload_store(&self.shared.node, &mut state);
        if !state.serving.contains_key(root) {
            drop(state);
            let end = self.end_offset(&format!("{root}.reqs"));
            let mut state = crate::sync::lock(&self.shared.state);
            state.serving.entry(root.to_owned()).or_insert(end);
            state.assignment_changed = true;
        }
    }

    /// The secret of key `key_id` of `root`, if this process has it.
    pub fn key(&self, root: &str, key_id: &[u8; 32]) -> Option<Secret> {
        crate::sync::lock(&self.shared.state)
            .keys
            .get(&(root.to_owned(), *key_id))
            .cloned()
    }

    /// Key replies sent so far.
    pub fn replies_sent(&self) -> u64 {
        self.shared.replies.load(Ordering::Relaxed)
    }

    /// Counts keys received so far (grows when one arrives).
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Asks producers for key `key_id` of `root` (again, with growing intervals, until it
    /// arrives), without waiting for it.
    pub fn want(&self, root: &str, key_id: &[u8; 32]) {
        let listening = crate::sync::lock(&self.shared.state)
            .listening
            .contains_key(root);
        // Where replies start is looked up before the first request goes out.
        let end = (!listening).then(|| self.end_offset(&format!("{root}.keys")));
        let mut state = crate::sync::lock(&self.shared.state);
        if let Some(end) = end {
            state.listening.entry(root.to_owned()).or_insert(end);
            state.assignment_changed = true;
        }
        if state.keys.contains_key(&(root.to_owned(), *key_id)) {
            return;
        }
        if state
            .wanted
            .entry(root.to_owned())
            .or_default()
            .insert(*key_id)
        {
            state
                .next_request
                .entry(root.to_owned())
                .or_insert((Instant::now(), FIRST_RETRY));
        }
    }

    /// Stops the thread after flushing what it produced.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.arrived.notify_all();
        if let Some(handle) = crate::sync::lock(&self.thread).take() {
            let _ = handle.join();
        }
        let _ = self.producer.flush(Duration::from_secs(5));
    }

    fn end_offset(&self, topic: &str) -> i64 {
        match self
            .consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
        {
            Ok((_, high)) => high,
            Err(e) => {
                warn!(topic, error = %e, "cannot read the end of a key-exchange topic; reading it from its start");
                0
            }
        }
    }
}

impl Drop for KeyService {
    fn drop(&mut self) {
        self.stop();
    }
}

fn reload_store(node: &Node, state: &mut State) {
    state.last_store_reload = Some(Instant::now());
    match keystore::load(node) {
        Ok(keys) => {
            for key in keys {
                state
                    .served
                    .insert((key.root.clone(), key.key_id), key.secret.clone());
                state
                    .keys
                    .entry((key.root, key.key_id))
                    .or_insert(key.secret);
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot read the node's key store; only this process's keys are served")
        }
    }
}

fn run(shared: &Shared, consumer: &ExchangeConsumer, producer: &ExchangeProducer) {
    while !shared.stop.load(Ordering::Acquire) {
        reassign(shared, consumer);
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let topic = message.topic().to_owned();
                let (key, value) = (
                    message.key().unwrap_or_default().to_vec(),
                    message.payload().unwrap_or_default().to_vec(),
                );
                if let Some(root) = topic.strip_suffix(".reqs") {
                    answer(shared, producer, root, &key, &value);
                } else if let Some(root) = topic.strip_suffix(".keys") {
                    receive(shared, root, &value);
                } else {
                    global_update(shared, &topic, &key, &value);
                }
            }
            Some(Err(e)) => debug!(error = %e, "key-exchange consumer"),
            None => {}
        }
        send_due_requests(shared, producer);
        producer.poll(Duration::ZERO);
    }
}

fn reassign(shared: &Shared, consumer: &ExchangeConsumer) {
    let mut state = crate::sync::lock(&shared.state);
    if !state.assignment_changed {
        return;
    }
    state.assignment_changed = false;
    let mut list = TopicPartitionList::new();
    for (root, offset) in &state.listening {
        let _ = list.add_partition_offset(&format!("{root}.keys"), 0, Offset::Offset(*offset));
    }
    for (root, offset) in &state.serving {
        let _ = list.add_partition_offset(&format!("{root}.reqs"), 0, Offset::Offset(*offset));
    }
    for topic in &state.globals {
        let _ = list.add_partition_offset(topic, 0, Offset::Beginning);
    }
    // Positions already read are kept: reassigning must not re-read from the noted start.
    if let Ok(positions) = consumer.position() {
        for element in positions.elements() {
            if let Offset::Offset(o) = element.offset() {
                let _ = list.set_partition_offset(
                    element.topic(),
                    element.partition(),
                    Offset::Offset(o),
                );
            }
        }
    }
    if let Err(e) = consumer.assign(&list) {
        warn!(error = %e, "cannot read the key-exchange topics");
    }
}

fn answer(shared: &Shared, producer: &ExchangeProducer, root: &str, key: &[u8], value: &[u8]) {
    let (chain, trust) = (
        crate::sync::read(&shared.chain),
        crate::sync::read(&shared.trust),
    );
    let mut state = crate::sync::lock(&shared.state);
    if !state.serving.contains_key(root) {
        return;
    }
    let missing = super::exchange::parse_key_id_list(key)
        .map(|ids| {
            ids.iter()
                .any(|id| !state.served.contains_key(&(root.to_owned(), *id)))
        })
        .unwrap_or(false);
    if missing
        && state
            .last_store_reload
            .is_none_or(|t| t.elapsed() >= STORE_RELOAD_EVERY)
    {
        reload_store(&shared.node, &mut state);
    }
    let lookup = |id: &[u8; 32]| state.served.get(&(root.to_owned(), *id)).cloned();
    match answer_request(
        &identity(shared, &chain[..], &trust),
        root,
        key,
        value,
        &lookup,
        unix_now(),
    ) {
        Ok(Some((reply_key, reply))) => {
            let topic = format!("{root}.keys");
            if let Err((e, _)) = producer.send(
                BaseRecord::to(&topic)
                    .partition(0)
                    .key(&reply_key)
                    .payload(&reply),
            ) {
                warn!(topic, error = %e, "cannot send a key reply");
            } else {
                shared.replies.fetch_add(1, Ordering::Relaxed);
                info!(root, "sent keys to a requesting consumer");
            }
        }
        Ok(None) => debug!(root, "a key request for keys this node does not hold"),
        Err(e) => warn!(root, error = %e, "refused a key request"),
    }
}

fn receive(shared: &Shared, root: &str, value: &[u8]) {
    let (chain, trust) = (
        crate::sync::read(&shared.chain),
        crate::sync::read(&shared.trust),
    );
    let mut state = crate::sync::lock(&shared.state);
    let state = &mut *state;
    match accept_reply(
        &identity(shared, &chain[..], &trust),
        root,
        value,
        &mut state.pending,
        unix_now(),
    ) {
        Ok(keys) => {
            for (id, secret) in keys {
                if let Some(w) = state.wanted.get_mut(root) {
                    w.remove(&id);
                }
                state.keys.insert((root.to_owned(), id), secret);
            }
            if state.wanted.get(root).is_none_or(BTreeSet::is_empty) {
                state.wanted.remove(root);
                state.next_request.remove(root);
            }
            info!(root, "received decryption keys");
            shared.generation.fetch_add(1, Ordering::AcqRel);
            shared.arrived.notify_all();
        }
        Err(ExchangeError::NotOurs) => debug!(root, "a key reply for another consumer"),
        Err(e) => warn!(root, error = %e, "refused a key reply"),
    }
}

fn send_due_requests(shared: &Shared, producer: &ExchangeProducer) {
    let (chain, trust) = (
        crate::sync::read(&shared.chain),
        crate::sync::read(&shared.trust),
    );
    let mut state = crate::sync::lock(&shared.state);
    let state = &mut *state;
    let now = Instant::now();
    let due: Vec<String> = state
        .next_request
        .iter()
        .filter(|(root, (at, _))| *at <= now && state.listening.contains_key(*root))
        .map(|(root, _)| root.clone())
        .collect();
    for root in due {
        let ids: Vec<[u8; 32]> = state
            .wanted
            .get(&root)
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default();
        if ids.is_empty() {
            state.next_request.remove(&root);
            continue;
        }
        match make_request(
            &identity(shared, &chain[..], &trust),
            &root,
            &ids,
            unix_now(),
        ) {
            Ok((key, value, pending)) => {
                for suffix in [".subs", ".reqs"] {
                    let topic = format!("{root}{suffix}");
                    if let Err((e, _)) = producer.send(
                        BaseRecord::to(&topic)
                            .partition(0)
                            .key(&key)
                            .payload(&value),
                    ) {
                        warn!(topic, error = %e, "cannot send a key request");
                    }
                }
                info!(
                    root,
                    keys = ids.len(),
                    "asked producers for decryption keys"
                );
                state.pending.push(pending);
                if state.pending.len() > MAX_PENDING {
                    state.pending.remove(0);
                }
            }
            Err(e) => warn!(root, error = %e, "cannot make a key request"),
        }
        let wait = state
            .next_request
            .get(&root)
            .map_or(FIRST_RETRY, |(_, w)| *w);
        state
            .next_request
            .insert(root, (now + wait, (wait * 2).min(MAX_RETRY)));
    }
}

/// The node's identity with its current chain and trust (the guards are the caller's).
fn identity<'a>(shared: &'a Shared, chain: &'a [u8], trust: &'a Trust) -> Identity<'a> {
    Identity {
        signing: &shared.node.signing,
        chain,
        trust,
        max_age: shared.node.max_age,
    }
}

/// Applies a message of a global topic: an allow- or denylist entry from a trusted key, or a
/// renewed chain for this node; each is recorded in the node's config, as KafkaCrypto does.
fn global_update(shared: &Shared, topic: &str, key: &[u8], value: &[u8]) {
    let node = &shared.node;
    match topic {
        "allowlist" | "denylist" => {
            let deny = topic == "denylist";
            let update =
                globals::list_update(value, &crate::sync::read(&shared.trust), deny, unix_now());
            match update {
                Ok(update) => {
                    let mut trust = crate::sync::write(&shared.trust);
                    let list = if deny {
                        &mut trust.deny
                    } else {
                        &mut trust.allow
                    };
                    if list.contains(&update.key) {
                        return;
                    }
                    list.push(update.key);
                    drop(trust);
                    warn!(list = topic, key = %super::provision::hex(&update.key), "trust changed by a {topic} message");
                    let section = format!("{}-{topic}", node.id);
                    let name = encode_bytes(&super::primitives::sha256(&[&update.entry]));
                    if let Err(e) = keystore::update_conf(node, |conf| {
                        conf.set(&section, &name, encode_bytes(&update.entry));
                        Ok(())
                    }) {
                        warn!(error = %e, "cannot record the {topic} change in the node's config (it applies until the process stops)");
                    }
                }
                Err(e) => debug!(topic, error = %e, "ignored a {topic} message"),
            }
        }
        "chains" if key == node.signing.public() => {
            let current = crate::sync::read(&shared.chain).clone();
            let update = globals::chain_update(
                value,
                &node.signing.public(),
                &current,
                &crate::sync::read(&shared.trust),
                unix_now(),
            );
            match update {
                Ok(Some(chain)) => {
                    *crate::sync::write(&shared.chain) = chain.clone();
                    info!("using a renewed certificate chain from the chains topic");
                    let section = format!("{}-chains", node.id);
                    if let Err(e) = keystore::update_conf(node, |conf| {
                        conf.set(&section, "chain0", encode_bytes(&chain));
                        Ok(())
                    }) {
                        warn!(error = %e, "cannot record the renewed chain in the node's config");
                    }
                }
                Ok(None) => debug!("a chain for this node that does not expire later than the current one: ignored"),
                Err(e) => warn!(error = %e, "refused a chain for this node"),
            }
        }
        _ => {}
    }
}
