//! Certificates for TLS tests, generated per test with rcgen.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA, a broker certificate for 127.0.0.1/localhost, and a client certificate for alice.
pub struct Pki {
    pub ca: PathBuf,
    pub server: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_der: Vec<u8>,
}

pub fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Millrace test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "broker");
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    // Subject O=Millrace, OU=eng, CN=alice, in that order (rcgen's default holds a CN).
    client_params.distinguished_name = DistinguishedName::new();
    client_params
        .distinguished_name
        .push(DnType::OrganizationName, "Millrace");
    client_params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "eng");
    client_params
        .distinguished_name
        .push(DnType::CommonName, "alice");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        // One file: the private key and the chain, as ssl.keystore.type=PEM wants.
        server: write(
            "server.pem",
            format!("{}{}", server_key.serialize_pem(), server_cert.pem()),
        ),
        client_cert: write("alice.crt", client_cert.pem()),
        client_key: write("alice.key", client_key.serialize_pem()),
        client_der: client_cert.der().to_vec(),
    }
}
