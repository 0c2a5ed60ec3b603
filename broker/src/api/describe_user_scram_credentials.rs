//! DescribeUserScramCredentials: which users have SCRAM credentials, for which mechanisms and
//! iterations (never the salts or keys).

use bytes::Bytes;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// RESOURCE_NOT_FOUND.
const RESOURCE_NOT_FOUND: i16 = 91;
/// DUPLICATE_RESOURCE.
const DUPLICATE_RESOURCE: i16 = 92;

/// Answers a DescribeUserScramCredentials request (all users when none are named).
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: DescribeUserScramCredentialsRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::Describe, Resource::cluster()) {
        return ctx.respond(
            &DescribeUserScramCredentialsResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                .with_error_message(Some(str_bytes(
                    "describing users needs DESCRIBE on the cluster",
                ))),
        );
    }
    let image = broker.controller.image();
    let describe = |name: &str| {
        let result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(name));
        match image.scram_users().find(|(user, _)| user.as_str() == name) {
            Some((_, credentials)) => result.with_error_code(NONE).with_credential_infos(
                credentials
                    .iter()
                    .map(|(mechanism, credential)| {
                        CredentialInfo::default()
                            .with_mechanism(mechanism.wire())
                            .with_iterations(credential.iterations)
                    })
                    .collect(),
            ),
            None => result
                .with_error_code(RESOURCE_NOT_FOUND)
                .with_error_message(Some(str_bytes(format!(
                    "Attempt to describe a user credential that does not exist: {name}"
                )))),
        }
    };
    let results = match request.users {
        None => image
            .scram_users()
            .map(|(name, _)| describe(name))
            .collect(),
        Some(users) if users.is_empty() => image
            .scram_users()
            .map(|(name, _)| describe(name))
            .collect(),
        Some(users) => {
            let mut results: Vec<DescribeUserScramCredentialsResult> = Vec::new();
            for user in &users {
                let name = user.name.as_str();
                let count = users.iter().filter(|u| u.name.as_str() == name).count();
                if results.iter().any(|r| r.user.as_str() == name) {
                    continue;
                }
                if count > 1 {
                    results.push(
                        DescribeUserScramCredentialsResult::default()
                            .with_user(str_bytes(name))
                            .with_error_code(DUPLICATE_RESOURCE)
                            .with_error_message(Some(str_bytes(format!(
                                "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                            )))),
                    );
                } else {
                    results.push(describe(name));
                }
            }
            results
        }
    };
    let response = DescribeUserScramCredentialsResponse::default()
        .with_error_code(NONE)
        .with_results(results);
    ctx.respond(&response)
}
