//! AlterUserScramCredentials: set or delete SCRAM credentials. The client sends the salted
//! password (never the password); the active controller validates and records the salted
//! keys in the metadata log, so every broker of the cluster learns them.

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::controller::users::{ScramDeletion, ScramUpsertion};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers an AlterUserScramCredentials request through the active controller.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: AlterUserScramCredentialsRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::Alter, Resource::cluster()) {
        let mut users: Vec<String> = request
            .deletions
            .iter()
            .map(|d| d.name.to_string())
            .chain(request.upsertions.iter().map(|u| u.name.to_string()))
            .collect();
        users.dedup();
        let results = users
            .into_iter()
            .map(|user| {
                AlterUserScramCredentialsResult::default()
                    .with_user(str_bytes(user))
                    .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(
                        "changing users needs ALTER on the cluster",
                    )))
            })
            .collect();
        return ctx.respond(&AlterUserScramCredentialsResponse::default().with_results(results));
    }
    let deletions: Vec<ScramDeletion> = request
        .deletions
        .iter()
        .map(|d| ScramDeletion {
            name: d.name.to_string(),
            mechanism: d.mechanism,
        })
        .collect();
    let upsertions: Vec<ScramUpsertion> = request
        .upsertions
        .iter()
        .map(|u| ScramUpsertion {
            name: u.name.to_string(),
            mechanism: u.mechanism,
            iterations: u.iterations,
            salt: u.salt.to_vec(),
            salted_password: u.salted_password.to_vec(),
        })
        .collect();
    let names: Vec<String> = {
        let mut names: Vec<String> = Vec::new();
        for name in deletions
            .iter()
            .map(|d| &d.name)
            .chain(upsertions.iter().map(|u| &u.name))
        {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    };
    let results = match broker
        .controller
        .alter_scram_credentials(upsertions, deletions)
        .await
    {
        Ok(results) => results
            .into_iter()
            .map(|(user, error)| {
                let result = AlterUserScramCredentialsResult::default().with_user(str_bytes(user));
                match error {
                    None => result.with_error_code(NONE),
                    Some((code, message)) => result
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect(),
        Err(error) => {
            let code: ResponseError = (&error).into();
            names
                .into_iter()
                .map(|user| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(str_bytes(user))
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(error.to_string())))
                })
                .collect()
        }
    };
    let response = AlterUserScramCredentialsResponse::default()
        .with_throttle_time_ms(0)
        .with_results(results);
    ctx.respond(&response)
}
