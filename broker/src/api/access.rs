//! What a request's principal may do: the authorizer (when `authorizer.class.name` is set)
//! over the ACLs of one metadata image, so the checks of one request agree with each other.
//! Without an authorizer everything is allowed, as in Kafka.

use std::sync::Arc;

use crate::broker::Broker;
use crate::metadata::MetadataImage;
use crate::security::authorizer::{
    all_operations, AclOperation, Authorizer, Resource, ResourceType,
};
use crate::security::Session;

use super::RequestContext;

/// The checks of one request.
pub struct Access<'a> {
    checker: Option<(&'a Authorizer, Arc<MetadataImage>)>,
    session: &'a Session,
}

impl<'a> Access<'a> {
    /// The checks for `ctx`'s principal, over the broker's current ACLs.
    pub fn new(broker: &'a Broker, ctx: &'a RequestContext) -> Self {
        Access {
            checker: broker
                .authorizer
                .as_ref()
                .map(|authorizer| (authorizer, broker.controller.image())),
            session: &ctx.session,
        }
    }

    /// Whether there is an authorizer at all (the ACL APIs answer SECURITY_DISABLED without).
    pub fn enabled(&self) -> bool {
        self.checker.is_some()
    }

    /// Whether the principal may do `operation` on `resource`; a denial is logged.
    pub fn authorize(&self, operation: AclOperation, resource: Resource<'_>) -> bool {
        match &self.checker {
            None => true,
            Some((authorizer, image)) => {
                authorizer.authorize(image.acls(), self.session, operation, resource)
            }
        }
    }

    /// [`Self::authorize`] without logging: for leaving resources out of lists.
    pub fn allowed(&self, operation: AclOperation, resource: Resource<'_>) -> bool {
        match &self.checker {
            None => true,
            Some((authorizer, image)) => {
                authorizer.allowed(image.acls(), self.session, operation, resource)
            }
        }
    }

    /// Why an ACL API (CreateAcls, DeleteAcls: ALTER; DescribeAcls: DESCRIBE on the cluster)
    /// is refused, if it is: no authorizer (SECURITY_DISABLED), or no permission.
    pub fn acl_api_refusal(
        &self,
        operation: AclOperation,
    ) -> Option<(crate::error::ResponseError, String)> {
        use crate::error::ResponseError;
        if !self.enabled() {
            return Some((
                ResponseError::SecurityDisabled,
                "No Authorizer is configured on the broker (set authorizer.class.name)".into(),
            ));
        }
        (!self.authorize(operation, Resource::cluster())).then(|| {
            (
                ResponseError::ClusterAuthorizationFailed,
                format!("ACL requests need {} on the cluster", operation.name()),
            )
        })
    }

    /// Whether the principal may do `operation` on some resource of `resource_type`.
    pub fn allowed_on_any(&self, operation: AclOperation, resource_type: ResourceType) -> bool {
        match &self.checker {
            None => true,
            Some((authorizer, image)) => {
                authorizer.allowed_on_any(image.acls(), self.session, operation, resource_type)
            }
        }
    }

    /// Kafka's `authorized_operations` bit field for `resource`.
    pub fn authorized_operations(&self, resource: Resource<'_>) -> i32 {
        match &self.checker {
            None => all_operations(resource.resource_type),
            Some((authorizer, image)) => {
                authorizer.authorized_operations(image.acls(), self.session, resource)
            }
        }
    }
}
