//! SaslAuthenticate (v0-2): one SASL token each way. v1 adds `session_lifetime_ms` (KIP-368).

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};

use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::security::store::BrokerCredentials;
use crate::security::{Authenticator, SecuredListener};

/// Answers a SaslAuthenticate; the flag says to close the connection after the answer.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
    authenticator: &mut Authenticator,
    listener: &SecuredListener,
) -> Result<(Bytes, bool), RequestError> {
    let request: SaslAuthenticateRequest = ctx.decode(&mut body)?;
    let image = broker.controller.image();
    let store = BrokerCredentials::of(listener, &image);
    let outcome = authenticator.authenticate(&request.auth_bytes, &store, Instant::now());
    broker.metrics.sockets.authentication_outcome(&outcome);
    let mut response = SaslAuthenticateResponse::default()
        .with_error_code(outcome.error_code)
        .with_error_message(outcome.error_message.map(str_bytes))
        .with_auth_bytes(Bytes::from(outcome.auth_bytes));
    if ctx.version >= 1 {
        response = response.with_session_lifetime_ms(outcome.session_lifetime_ms);
    }
    Ok((ctx.respond(&response)?, outcome.close))
}
