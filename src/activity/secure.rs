//! The demo on a secured broker (`millrace demo --security sasl_ssl`): a throw-away CA and
//! broker certificate, a SASL_SSL listener with a PLAIN user for the demo's own clients, and
//! the Kafka client settings every part of the pipeline connects with. What a production setup
//! has too, made on the spot so that the secured path is one command away.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The PLAIN user the demo's clients (generator, jobs, export, dashboard) log in as.
pub const DEMO_USER: &str = "demo";

/// A secured demo's files and credentials.
#[derive(Clone)]
pub struct DemoSecurity {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The broker's key and certificate chain (`ssl.keystore.location`).
    pub keystore: PathBuf,
    /// The demo user's client settings as a properties file (`--command-config`, kcat's
    /// `-F`), so the password need not be shown.
    pub client_properties: PathBuf,
    /// The demo user's password (random per start).
    password: String,
}

impl std::fmt::Debug for DemoSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoSecurity")
            .field("ca", &self.ca)
            .field("keystore", &self.keystore)
            .field("client_properties", &self.client_properties)
            .finish_non_exhaustive()
    }
}

impl DemoSecurity {
    /// Makes a CA and a broker certificate for `host` (and localhost) under `dir`, and a
    /// password for the demo user.
    pub fn create(dir: &Path, host: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_key = KeyPair::generate().context("a CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Millrace demo CA");
        let ca_cert = ca_params.self_signed(&ca_key).context("signing the CA")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let broker_key = KeyPair::generate().context("a broker key")?;
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
        let mut broker_params = CertificateParams::new(names).context("broker certificate")?;
        broker_params
            .distinguished_name
            .push(DnType::CommonName, "millrace-demo-broker");
        let broker_cert = broker_params
            .signed_by(&broker_key, &issuer)
            .context("signing the broker certificate")?;

        let ca = dir.join("ca.pem");
        let keystore = dir.join("broker-keystore.pem");
        std::fs::write(&ca, ca_cert.pem()).with_context(|| format!("writing {}", ca.display()))?;
        std::fs::write(
            &keystore,
            format!("{}{}", broker_key.serialize_pem(), broker_cert.pem()),
        )
        .with_context(|| format!("writing {}", keystore.display()))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()),
        );
        let password: String = (0..24)
            .map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rng.random_range(0..32)]))
            .collect();
        let client_properties = dir.join("client.properties");
        let security = DemoSecurity {
            ca,
            keystore,
            client_properties,
            password,
        };
        let properties: String = security
            .client_settings()
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        std::fs::write(&security.client_properties, properties)
            .with_context(|| format!("writing {}", security.client_properties.display()))?;
        Ok(security)
    }

    /// The broker settings of a SASL_SSL listener named `listener`, with the demo user (who
    /// is also the brokers' own user between themselves).
    pub fn broker_settings(&self, listener: &str) -> Vec<(String, String)> {
        let jaas = format!(
            "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{DEMO_USER}\" password=\"{p}\" user_{DEMO_USER}=\"{p}\";",
            p = self.password
        );
        vec![
            (
                "listener.security.protocol.map".into(),
                format!("{listener}:SASL_SSL,CONTROLLER:PLAINTEXT"),
            ),
            ("ssl.keystore.type".into(), "PEM".into()),
            (
                "ssl.keystore.location".into(),
                self.keystore.display().to_string(),
            ),
            ("ssl.truststore.type".into(), "PEM".into()),
            (
                "ssl.truststore.location".into(),
                self.ca.display().to_string(),
            ),
            ("sasl.enabled.mechanisms".into(), "PLAIN".into()),
            (
                "sasl.mechanism.inter.broker.protocol".into(),
                "PLAIN".into(),
            ),
            ("sasl.jaas.config".into(), jaas),
        ]
    }

    /// The Kafka client settings of the demo user.
    pub fn client_settings(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ("ssl.ca.location".to_string(), self.ca.display().to_string()),
            ("sasl.mechanism".to_string(), "PLAIN".to_string()),
            ("sasl.username".to_string(), DEMO_USER.to_string()),
            ("sasl.password".to_string(), self.password.clone()),
        ])
    }
}
