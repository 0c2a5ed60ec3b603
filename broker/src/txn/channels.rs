//! Connections to other brokers for the transaction work (WriteTxnMarkers to partition
//! leaders, KIP-890 verification with coordinators), kept open between requests: both happen
//! at least once per transaction, and a new TCP connection each time would cost a round trip
//! and a socket per transaction.
//!
//! One connection per address, used by one request at a time (the inter-broker connection
//! answers in order and is not pipelined); a request that fails drops its connection, so the
//! next one starts afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kafka_protocol::protocol::Request;

use crate::replica::broker_connection::BrokerConnection;
use crate::security::inter_broker::InterBrokerSecurity;

/// Open connections by `host:port`.
pub struct InterBrokerChannels {
    connections: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<BrokerConnection>>>>>,
    /// TLS and SASL toward the other brokers (the inter-broker listener's).
    security: Arc<InterBrokerSecurity>,
}

impl InterBrokerChannels {
    /// Channels that connect with `security`.
    pub fn new(security: Arc<InterBrokerSecurity>) -> Self {
        InterBrokerChannels {
            connections: Mutex::default(),
            security,
        }
    }

    /// Sends `request` at `version` to `address` (connecting first if needed) and returns the
    /// answer, or the error as text.
    pub async fn call<R: Request>(
        &self,
        address: &str,
        client_id: &str,
        version: i16,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, String> {
        let slot = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(address.to_string())
            .or_default()
            .clone();
        let mut connection = slot.lock().await;
        if connection.is_none() {
            let fresh =
                BrokerConnection::connect(address, client_id.to_string(), timeout, &self.security)
                    .await
                    .map_err(|e| e.to_string())?;
            *connection = Some(fresh);
        }
        let Some(open) = connection.as_mut() else {
            return Err(format!("no connection to {address}"));
        };
        match open.call(version, request, timeout).await {
            Ok(response) => Ok(response),
            Err(error) => {
                *connection = None;
                Err(error.to_string())
            }
        }
    }
}
