//! SaslHandshake (v0-1): the client names a SASL mechanism; the answer lists the enabled
//! ones. Handled by the connection, which owns the [`Authenticator`], not by a shared handler.

use bytes::Bytes;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

use super::{str_bytes, RequestContext, RequestError};
use crate::security::Authenticator;

/// Answers a SaslHandshake; the flag says to close the connection after the answer.
pub fn handle(
    ctx: &RequestContext,
    mut body: Bytes,
    authenticator: &mut Authenticator,
) -> Result<(Bytes, bool), RequestError> {
    let request: SaslHandshakeRequest = ctx.decode(&mut body)?;
    let outcome = authenticator.handshake(request.mechanism.as_str(), ctx.version);
    let response = SaslHandshakeResponse::default()
        .with_error_code(outcome.error_code)
        .with_mechanisms(outcome.mechanisms.into_iter().map(str_bytes).collect());
    Ok((ctx.respond(&response)?, outcome.close))
}
