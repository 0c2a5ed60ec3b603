//! The broker's [`CredentialStore`]: PLAIN users from the listener's JAAS line, SCRAM
//! credentials from the metadata image (replicated through the metadata log).

use std::collections::BTreeMap;

use super::oauthbearer::TokenValidator;
use super::sasl::{CredentialStore, ScramCredential, ScramMechanism};
use crate::metadata::MetadataImage;

/// Users as one listener sees them at one moment.
pub struct BrokerCredentials<'a> {
    /// PLAIN users of the listener.
    pub plain_users: &'a BTreeMap<String, String>,
    /// The current metadata image.
    pub image: &'a MetadataImage,
    /// The listener's OAUTHBEARER validator.
    pub token_validator: Option<&'a TokenValidator>,
}

impl<'a> BrokerCredentials<'a> {
    /// The users `listener` knows, with SCRAM users from `image`.
    pub fn of(listener: &'a super::SecuredListener, image: &'a MetadataImage) -> Self {
        Self::of_listener(&listener.security, listener.token_validator.as_ref(), image)
    }

    /// The users a listener with `security` knows (PLAIN users from its JAAS line), with SCRAM
    /// users from `image` and OAUTHBEARER tokens checked by `token_validator`.
    pub fn of_listener(
        security: &'a super::ListenerSecurity,
        token_validator: Option<&'a TokenValidator>,
        image: &'a MetadataImage,
    ) -> Self {
        static NO_USERS: BTreeMap<String, String> = BTreeMap::new();
        BrokerCredentials {
            plain_users: security
                .sasl
                .as_ref()
                .map_or(&NO_USERS, |sasl| &sasl.plain_users),
            image,
            token_validator,
        }
    }
}

impl CredentialStore for BrokerCredentials<'_> {
    fn plain_password(&self, user: &str) -> Option<String> {
        self.plain_users.get(user).cloned()
    }

    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.image.scram_credential(user, mechanism).cloned()
    }

    fn token_validator(&self) -> Option<&TokenValidator> {
        self.token_validator
    }
}
