//! `openmsi topic` and `openmsi user`: topic and SCRAM-user administration through the Kafka
//! admin API, with the same config files, security settings and connection check as every
//! other command.
//!
//! - [`topic`]: create (sized for chunks), list, describe (with group lag), delete.
//! - [`user`]: add and remove SCRAM users.
//! - [`native`]: the two librdkafka admin calls the rdkafka crate does not wrap (`unsafe`).
//! - [`run`]: the parsed flags mapped onto these.

pub mod native;
pub mod run;
pub mod topic;
pub mod user;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::config::ClientConfig;
use rdkafka::metadata::Metadata;

use crate::config::LoadedConfig;
use crate::kafka::client::{bootstrap_servers, client_config, create_client};
use crate::kafka::topic::connect;
use crate::kafka::LogContext;

/// An admin client that has answered a metadata request.
pub struct Admin {
    pub client: AdminClient<LogContext>,
    pub cfg: ClientConfig,
    /// For messages: the bootstrap servers.
    pub brokers: String,
    /// Bound on each request.
    pub timeout: Duration,
    /// The loaded config (for the consumers `topic describe` uses to read group offsets).
    pub config: LoadedConfig,
}

impl Admin {
    /// Creates the client from `config` (its `[broker]` and `[producer]` settings) and waits up
    /// to `timeout` for the cluster to answer.
    pub fn connect(config: LoadedConfig, timeout: Duration) -> anyhow::Result<Admin> {
        let cfg = client_config(&config.producer_properties(), &[], &[]);
        let client: AdminClient<LogContext> =
            create_client(&cfg, LogContext, &config, "admin client")?;
        // The admin client's own thread serves its events.
        connect(client.inner(), &cfg, None, timeout, &|| {})?;
        Ok(Admin {
            brokers: bootstrap_servers(&cfg),
            client,
            cfg,
            timeout,
            config,
        })
    }

    /// Options with this admin's request timeout.
    pub fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Fresh metadata for `topic` (None: every topic).
    pub fn metadata(&self, topic: Option<&str>) -> anyhow::Result<Metadata> {
        Ok(self.client.inner().fetch_metadata(topic, self.timeout)?)
    }
}
