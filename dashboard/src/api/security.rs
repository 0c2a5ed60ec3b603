//! The cluster's security settings: SCRAM users, ACLs and client quotas. Reading them is
//! what the principal may describe (the broker answers 403 otherwise); changing them also
//! needs `--allow-admin`, as every admin action.
//!
//! An ACL edit adds the new ACL before it removes the old one: clients the old ACL lets in
//! keep working throughout, where a remove-then-add would refuse them in between.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use millrace_client::admin::{
    AclBinding, AclBindingFilter, AclOperation, AclPatternType, AclPermissionType, AclResourceType,
    QuotaAlteration, QuotaEntityPart,
};
use millrace_client::network::SaslMechanism;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::{bounded, check_allowed};
use super::Ctx;
use crate::error::{ApiError, ApiResult};

/// Kafka's default SCRAM iteration count (kafka-configs uses 4096).
const DEFAULT_ITERATIONS: i32 = 4096;
/// The SCRAM mechanisms a user gets when the request names none.
const SCRAM_MECHANISMS: [SaslMechanism; 2] =
    [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512];

// --- users ------------------------------------------------------------------------------

/// `GET /api/users`: every SCRAM user with its mechanisms and iteration counts.
pub async fn users(Ctx(state): Ctx) -> ApiResult<Json<Value>> {
    let admin = state.cluster.admin().await?;
    let users = bounded("listing users", admin.describe_scram_users()).await?;
    Ok(Json(json!({
        "users": users.into_iter().map(|(name, mechanisms)| json!({
            "name": name,
            "mechanisms": mechanisms.into_iter().map(|(mechanism, iterations)| json!({
                "mechanism": mechanism, "iterations": iterations,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })))
}

/// The body of `POST /api/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The user name.
    pub name: String,
    /// Its password (salted and iterated by the client; only the salted form is sent).
    pub password: String,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`; both when absent.
    pub mechanism: Option<String>,
    /// Iterations (default 4096, at least 4096 as Kafka requires).
    pub iterations: Option<i32>,
}

fn scram_mechanism(name: &str) -> ApiResult<SaslMechanism> {
    match name.trim().to_ascii_uppercase().as_str() {
        "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
        "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
        other => Err(ApiError::bad_request(format!(
            "unknown SCRAM mechanism {other:?}: use SCRAM-SHA-256 or SCRAM-SHA-512"
        ))),
    }
}

/// `POST /api/users {"name", "password", "mechanism"?, "iterations"?}` -> 201: adds the user
/// or sets its password.
pub async fn add_user(
    Ctx(state): Ctx,
    body: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_allowed(&state)?;
    let Json(request) = body?;
    let name = request.name.trim();
    if name.is_empty() || request.password.is_empty() {
        return Err(ApiError::bad_request("give a user name and a password"));
    }
    let iterations = request.iterations.unwrap_or(DEFAULT_ITERATIONS);
    if !(DEFAULT_ITERATIONS..=16_384).contains(&iterations) {
        return Err(ApiError::bad_request(
            "iterations must be between 4096 and 16384",
        ));
    }
    let mechanisms = match &request.mechanism {
        Some(m) => vec![scram_mechanism(m)?],
        None => SCRAM_MECHANISMS.to_vec(),
    };
    let admin = state.cluster.admin().await?;
    for mechanism in &mechanisms {
        bounded(
            "setting the user's credential",
            admin.upsert_scram_credential(name, *mechanism, &request.password, iterations),
        )
        .await?;
    }
    tracing::info!(user = %name, by = ?state.user, "SCRAM user set from the dashboard");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "user": name,
            "mechanisms": mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>(),
        })),
    ))
}

/// Query of `DELETE /api/users/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteUser {
    /// Only this mechanism's credential (default: all the user has).
    pub mechanism: Option<String>,
}

/// `DELETE /api/users/{name}[?mechanism=]`: removes the user's SCRAM credentials; 404 when
/// it has none.
pub async fn delete_user(
    Ctx(state): Ctx,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<DeleteUser>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    check_allowed(&state)?;
    let Path(name) = name?;
    let Query(query) = query?;
    let admin = state.cluster.admin().await?;
    let mechanisms = match &query.mechanism {
        Some(m) => vec![scram_mechanism(m)?],
        None => {
            let users = bounded("listing users", admin.describe_scram_users()).await?;
            let has: Vec<String> = users
                .into_iter()
                .find(|(user, _)| *user == name)
                .map(|(_, mechanisms)| mechanisms.into_iter().map(|(m, _)| m).collect())
                .unwrap_or_default();
            let mechanisms: Vec<SaslMechanism> = SCRAM_MECHANISMS
                .into_iter()
                .filter(|m| has.iter().any(|h| h == m.name()))
                .collect();
            if mechanisms.is_empty() {
                return Err(ApiError::not_found(format!("no SCRAM user named {name:?}")));
            }
            mechanisms
        }
    };
    for mechanism in &mechanisms {
        bounded(
            "deleting the user's credential",
            admin.delete_scram_credential(&name, *mechanism),
        )
        .await?;
    }
    tracing::info!(user = %name, by = ?state.user, "SCRAM user deleted from the dashboard");
    Ok(Json(json!({
        "deleted": name,
        "mechanisms": mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>(),
    })))
}

// --- ACLs -------------------------------------------------------------------------------

/// One ACL as the API reads and writes it, with Kafka's names (`TOPIC`, `LITERAL`,
/// `User:alice`, `READ`, `ALLOW`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclJson {
    /// `TOPIC`, `GROUP`, `CLUSTER`, `TRANSACTIONAL_ID`, ...
    pub resource_type: String,
    /// A name, a prefix (with `PREFIXED`), or `*`.
    pub resource_name: String,
    /// `LITERAL` (default) or `PREFIXED`.
    pub pattern_type: Option<String>,
    /// `User:alice`, or `User:*`.
    pub principal: String,
    /// An IP address, or `*` (default).
    pub host: Option<String>,
    /// `READ`, `WRITE`, `DESCRIBE`, `ALL`, ...
    pub operation: String,
    /// `ALLOW` (default) or `DENY`.
    pub permission: Option<String>,
}

fn parse_or<T>(text: &str, what: &str, parse: impl Fn(&str) -> Option<T>) -> ApiResult<T> {
    parse(text).ok_or_else(|| ApiError::bad_request(format!("unknown {what} {text:?}")))
}

impl AclJson {
    /// The binding, checked: a concrete type, pattern, operation and permission (no `ANY`),
    /// a `Type:name` principal and a non-empty name.
    fn binding(&self) -> ApiResult<AclBinding> {
        let resource_type = parse_or(&self.resource_type, "resource type", AclResourceType::parse)?;
        let pattern_type = parse_or(
            self.pattern_type.as_deref().unwrap_or("LITERAL"),
            "pattern type",
            AclPatternType::parse,
        )?;
        let operation = parse_or(&self.operation, "operation", AclOperation::parse)?;
        let permission = parse_or(
            self.permission.as_deref().unwrap_or("ALLOW"),
            "permission",
            AclPermissionType::parse,
        )?;
        if resource_type == AclResourceType::Any
            || operation == AclOperation::Any
            || permission == AclPermissionType::Any
            || !matches!(
                pattern_type,
                AclPatternType::Literal | AclPatternType::Prefixed
            )
        {
            return Err(ApiError::bad_request(
                "an ACL names one resource type, operation and permission, and a LITERAL or \
                 PREFIXED pattern (ANY and MATCH are for filters)",
            ));
        }
        let resource_name = self.resource_name.trim().to_string();
        if resource_name.is_empty() {
            return Err(ApiError::bad_request("the resource name is empty"));
        }
        let principal = self.principal.trim().to_string();
        if !principal
            .split_once(':')
            .is_some_and(|(kind, name)| !kind.is_empty() && !name.is_empty())
        {
            return Err(ApiError::bad_request(format!(
                "the principal {principal:?} is not Type:name, such as User:alice"
            )));
        }
        let host = self.host.as_deref().unwrap_or("*").trim().to_string();
        Ok(AclBinding {
            resource_type,
            resource_name,
            pattern_type,
            principal,
            host: if host.is_empty() {
                "*".to_string()
            } else {
                host
            },
            operation,
            permission,
        })
    }
}

fn acl_json(acl: &AclBinding) -> Value {
    json!({
        "resource_type": acl.resource_type.name(),
        "resource_name": acl.resource_name,
        "pattern_type": acl.pattern_type.name(),
        "principal": acl.principal,
        "host": acl.host,
        "operation": acl.operation.name(),
        "permission": acl.permission.name(),
    })
}

/// Query of `GET /api/acls`: each field narrows the list; absent ones match anything.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclQuery {
    /// A resource type.
    pub resource_type: Option<String>,
    /// A resource name.
    pub resource_name: Option<String>,
    /// `LITERAL`, `PREFIXED`, or `MATCH` (every ACL that applies to the named resource).
    pub pattern_type: Option<String>,
    /// A principal.
    pub principal: Option<String>,
    /// A host.
    pub host: Option<String>,
    /// An operation.
    pub operation: Option<String>,
    /// `ALLOW` or `DENY`.
    pub permission: Option<String>,
}

impl AclQuery {
    fn filter(&self) -> ApiResult<AclBindingFilter> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        let mut filter = AclBindingFilter::any();
        if let Some(t) = given(&self.resource_type) {
            filter.resource_type = parse_or(t, "resource type", AclResourceType::parse)?;
        }
        if let Some(p) = given(&self.pattern_type) {
            filter.pattern_type = parse_or(p, "pattern type", AclPatternType::parse)?;
        }
        if let Some(o) = given(&self.operation) {
            filter.operation = parse_or(o, "operation", AclOperation::parse)?;
        }
        if let Some(p) = given(&self.permission) {
            filter.permission = parse_or(p, "permission", AclPermissionType::parse)?;
        }
        filter.resource_name = given(&self.resource_name).map(str::to_string);
        filter.principal = given(&self.principal).map(str::to_string);
        filter.host = given(&self.host).map(str::to_string);
        Ok(filter)
    }
}

/// `GET /api/acls[?resource_type=&resource_name=&pattern_type=&principal=&host=&operation=&permission=]`.
pub async fn acls(
    Ctx(state): Ctx,
    query: Result<Query<AclQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query?;
    let filter = query.filter()?;
    let admin = state.cluster.admin().await?;
    let mut acls = bounded("listing ACLs", admin.describe_acls(&filter)).await?;
    acls.sort();
    Ok(Json(json!({
        "acls": acls.iter().map(acl_json).collect::<Vec<_>>(),
    })))
}

/// `POST /api/acls {ACL}` -> 201.
pub async fn add_acl(
    Ctx(state): Ctx,
    body: Result<Json<AclJson>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_allowed(&state)?;
    let Json(request) = body?;
    let acl = request.binding()?;
    let admin = state.cluster.admin().await?;
    bounded(
        "creating the ACL",
        admin.create_acls(std::slice::from_ref(&acl)),
    )
    .await?;
    tracing::info!(%acl, by = ?state.user, "ACL added from the dashboard");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "created": acl_json(&acl) })),
    ))
}

/// `DELETE /api/acls {ACL}`: removes exactly that ACL; 404 when there is no such ACL.
pub async fn remove_acl(
    Ctx(state): Ctx,
    body: Result<Json<AclJson>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    check_allowed(&state)?;
    let Json(request) = body?;
    let acl = request.binding()?;
    let admin = state.cluster.admin().await?;
    let deleted = bounded(
        "removing the ACL",
        admin.delete_acls(&[AclBindingFilter::exactly(&acl)]),
    )
    .await?;
    if deleted.is_empty() {
        return Err(ApiError::not_found(format!("no such ACL: {acl}")));
    }
    tracing::info!(%acl, by = ?state.user, "ACL removed from the dashboard");
    Ok(Json(
        json!({ "removed": deleted.iter().map(acl_json).collect::<Vec<_>>() }),
    ))
}

/// The body of `PUT /api/acls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditAcl {
    /// The ACL to replace (it must exist).
    pub old: AclJson,
    /// What replaces it.
    pub new: AclJson,
}

/// `PUT /api/acls {"old": ACL, "new": ACL}`: adds the new ACL, then removes the old one, so
/// nothing the old ACL allowed is refused in between. 404 (nothing changed) when the old ACL
/// does not exist.
pub async fn edit_acl(
    Ctx(state): Ctx,
    body: Result<Json<EditAcl>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    check_allowed(&state)?;
    let Json(request) = body?;
    let old = request.old.binding()?;
    let new = request.new.binding()?;
    let admin = state.cluster.admin().await?;
    let existing = bounded(
        "looking up the ACL",
        admin.describe_acls(&AclBindingFilter::exactly(&old)),
    )
    .await?;
    if !existing.contains(&old) {
        return Err(ApiError::not_found(format!("no such ACL: {old}")));
    }
    if old == new {
        return Ok(Json(json!({ "created": acl_json(&new), "removed": [] })));
    }
    bounded(
        "creating the new ACL",
        admin.create_acls(std::slice::from_ref(&new)),
    )
    .await?;
    let removed = bounded(
        "removing the old ACL",
        admin.delete_acls(&[AclBindingFilter::exactly(&old)]),
    )
    .await
    .map_err(|e| {
        ApiError::new(
            e.status,
            format!(
                "the new ACL was added but the old one is still there: {}",
                e.message
            ),
        )
    })?;
    tracing::info!(%old, %new, by = ?state.user, "ACL edited from the dashboard");
    Ok(Json(json!({
        "created": acl_json(&new),
        "removed": removed.iter().map(acl_json).collect::<Vec<_>>(),
    })))
}

// --- quotas -----------------------------------------------------------------------------

/// One part of a quota entity: `{"type": "user"|"client-id", "name": "alice"}`; a null or
/// absent name is the default entity of the type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityPart {
    /// `user` or `client-id`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name; `None`: the default.
    pub name: Option<String>,
}

fn entity(parts: &[EntityPart]) -> ApiResult<Vec<QuotaEntityPart>> {
    if parts.is_empty() || parts.len() > 2 {
        return Err(ApiError::bad_request(
            "a quota entity is a user, a client id, or both",
        ));
    }
    let mut out: Vec<QuotaEntityPart> = Vec::new();
    for part in parts {
        let kind = part.kind.trim();
        if kind != "user" && kind != "client-id" {
            return Err(ApiError::bad_request(format!(
                "unknown quota entity type {kind:?}: use user or client-id"
            )));
        }
        if out.iter().any(|(k, _)| k == kind) {
            return Err(ApiError::bad_request(format!("{kind} is given twice")));
        }
        out.push((kind.to_string(), part.name.clone()));
    }
    Ok(out)
}

fn entity_json(parts: &[QuotaEntityPart]) -> Value {
    json!(parts
        .iter()
        .map(|(kind, name)| json!({ "type": kind, "name": name }))
        .collect::<Vec<_>>())
}

/// `GET /api/quotas`: every entity's quotas.
pub async fn quotas(Ctx(state): Ctx) -> ApiResult<Json<Value>> {
    let admin = state.cluster.admin().await?;
    let mut quotas = bounded("listing quotas", admin.describe_client_quotas(&[], false)).await?;
    quotas.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(json!({
        "quotas": quotas.iter().map(|(parts, values)| json!({
            "entity": entity_json(parts),
            "values": values,
        })).collect::<Vec<_>>(),
    })))
}

/// The body of `POST /api/quotas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlterQuota {
    /// The entity.
    pub entity: Vec<EntityPart>,
    /// Keys to set, such as `{"producer_byte_rate": 1048576}`.
    #[serde(default)]
    pub set: BTreeMap<String, f64>,
    /// Keys to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `POST /api/quotas {"entity": [...], "set"?: {key: value}, "remove"?: [key]}`. The broker
/// refuses unknown keys and non-positive values (400).
pub async fn alter_quota(
    Ctx(state): Ctx,
    body: Result<Json<AlterQuota>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    check_allowed(&state)?;
    let Json(request) = body?;
    let parts = entity(&request.entity)?;
    if request.set.is_empty() && request.remove.is_empty() {
        return Err(ApiError::bad_request("nothing to set or remove"));
    }
    if let Some((key, value)) = request
        .set
        .iter()
        .find(|(_, v)| !v.is_finite() || **v <= 0.0)
    {
        return Err(ApiError::bad_request(format!(
            "{key} must be a positive number (got {value})"
        )));
    }
    let ops: Vec<(String, Option<f64>)> = request
        .set
        .iter()
        .map(|(k, v)| (k.clone(), Some(*v)))
        .chain(request.remove.iter().map(|k| (k.clone(), None)))
        .collect();
    let admin = state.cluster.admin().await?;
    bounded(
        "altering the quota",
        admin.alter_client_quotas(&[QuotaAlteration {
            entity: parts.clone(),
            ops,
        }]),
    )
    .await?;
    tracing::info!(entity = ?parts, by = ?state.user, "quota altered from the dashboard");
    Ok(Json(json!({ "altered": entity_json(&parts) })))
}

/// The body of `DELETE /api/quotas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuota {
    /// The entity whose quotas go.
    pub entity: Vec<EntityPart>,
}

/// `DELETE /api/quotas {"entity": [...]}`: removes every quota of the entity; 404 when it
/// has none.
pub async fn remove_quota(
    Ctx(state): Ctx,
    body: Result<Json<RemoveQuota>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    check_allowed(&state)?;
    let Json(request) = body?;
    let parts = entity(&request.entity)?;
    let admin = state.cluster.admin().await?;
    let all = bounded("listing quotas", admin.describe_client_quotas(&[], false)).await?;
    let keys: Vec<String> = all
        .into_iter()
        .find(|(p, _)| {
            let mut a = p.clone();
            let mut b = parts.clone();
            a.sort();
            b.sort();
            a == b
        })
        .map(|(_, values)| values.into_keys().collect())
        .unwrap_or_default();
    if keys.is_empty() {
        return Err(ApiError::not_found("that entity has no quotas"));
    }
    bounded(
        "removing the quota",
        admin.alter_client_quotas(&[QuotaAlteration {
            entity: parts.clone(),
            ops: keys.iter().map(|k| (k.clone(), None)).collect(),
        }]),
    )
    .await?;
    tracing::info!(entity = ?parts, by = ?state.user, "quota removed from the dashboard");
    Ok(Json(
        json!({ "removed": entity_json(&parts), "keys": keys }),
    ))
}
