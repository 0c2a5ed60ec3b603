//! Who is asking: Kafka's `KafkaPrincipal` (`User:alice`), and the principal of a TLS client
//! certificate, `User:` plus its subject in RFC 2253 form, as Kafka's default principal
//! builder gives it (`X500Principal.getName()`).
//!
//! The subject is read from the certificate's DER with a small reader of our own: the
//! certificate was already verified by rustls, but its bytes still come from a client, so
//! every read is bounds-checked and a malformed one yields an error, never a panic.

use std::fmt;

/// Kafka's principal type for users.
pub const USER_TYPE: &str = "User";

/// An authenticated (or anonymous) identity, written `Type:name` as Kafka writes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KafkaPrincipal {
    /// `User` for every principal Millrace builds.
    pub principal_type: String,
    /// The user name, or a certificate's subject.
    pub name: String,
}

impl KafkaPrincipal {
    /// `User:ANONYMOUS`: the principal of PLAINTEXT connections and of SSL without a client
    /// certificate, as in Kafka.
    pub fn anonymous() -> Self {
        Self::user("ANONYMOUS")
    }

    /// `User:<name>`.
    pub fn user(name: impl Into<String>) -> Self {
        KafkaPrincipal {
            principal_type: USER_TYPE.to_string(),
            name: name.into(),
        }
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

/// Why a certificate's subject could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct CertificateError(&'static str);

/// The principal of a client certificate (DER): `User:` plus the subject in RFC 2253 form.
pub fn principal_from_certificate(der: &[u8]) -> Result<KafkaPrincipal, CertificateError> {
    Ok(KafkaPrincipal::user(subject_rfc2253(der)?))
}

/// The subject of an X.509 certificate in RFC 2253 form (`CN=alice,OU=eng,O=Example`).
pub fn subject_rfc2253(der: &[u8]) -> Result<String, CertificateError> {
    let mut certificate = Der::new(der).expect(0x30, "certificate")?.contents;
    let mut tbs = certificate.expect(0x30, "tbsCertificate")?.contents;
    if tbs.peek_tag() == Some(0xA0) {
        tbs.next_element()?; // [0] version
    }
    tbs.expect(0x02, "serial number")?;
    tbs.expect(0x30, "signature algorithm")?;
    tbs.expect(0x30, "issuer")?;
    tbs.expect(0x30, "validity")?;
    let subject = tbs.expect(0x30, "subject")?.contents;
    format_name(subject)
}

/// Formats a Name: RDNs last first, attributes of one RDN joined with `+`.
fn format_name(mut name: Der<'_>) -> Result<String, CertificateError> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let mut set = name.expect(0x31, "relative distinguished name")?.contents;
        let mut attributes = Vec::new();
        while !set.is_empty() {
            let whole = set.next_element()?;
            if whole.tag != 0x30 {
                return Err(CertificateError("attribute is not a SEQUENCE"));
            }
            let mut attribute = whole.contents;
            let oid = attribute.expect(0x06, "attribute type")?.contents.bytes;
            let value = attribute.next_element()?;
            attributes.push(format_attribute(oid, &value)?);
        }
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// One `TYPE=value`: a keyword RFC 2253 (and Java) knows with its string value escaped, any
/// other attribute as its dotted OID and `#` plus the hex of its DER encoding.
fn format_attribute(oid: &[u8], value: &Element<'_>) -> Result<String, CertificateError> {
    let keyword = match oid {
        [0x55, 0x04, 0x03] => Some("CN"),
        [0x55, 0x04, 0x06] => Some("C"),
        [0x55, 0x04, 0x07] => Some("L"),
        [0x55, 0x04, 0x08] => Some("ST"),
        [0x55, 0x04, 0x09] => Some("STREET"),
        [0x55, 0x04, 0x0A] => Some("O"),
        [0x55, 0x04, 0x0B] => Some("OU"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19] => Some("DC"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01] => Some("UID"),
        _ => None,
    };
    let text = match value.tag {
        // UTF8String, PrintableString, IA5String, TeletexString (read as Latin-1).
        0x0C | 0x13 | 0x16 => std::str::from_utf8(value.contents.bytes)
            .ok()
            .map(str::to_string),
        0x14 => Some(
            value
                .contents
                .bytes
                .iter()
                .map(|&b| char::from(b))
                .collect(),
        ),
        // BMPString: UTF-16BE.
        0x1E => {
            let units: Vec<u16> = value
                .contents
                .bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    };
    match (keyword, text) {
        (Some(keyword), Some(text)) => Ok(format!("{keyword}={}", escape(&text))),
        (keyword, _) => {
            let name = match keyword {
                Some(keyword) => keyword.to_string(),
                None => dotted_oid(oid)?,
            };
            let hex: String = value.raw.iter().map(|b| format!("{b:02x}")).collect();
            Ok(format!("{name}=#{hex}"))
        }
    }
}

/// RFC 2253 section 2.4 escaping.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An OID's dotted form (`1.2.840.113549.1.9.1`).
fn dotted_oid(bytes: &[u8]) -> Result<String, CertificateError> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &byte in bytes {
        value = value
            .checked_mul(128)
            .ok_or(CertificateError("OID arc too large"))?
            | u64::from(byte & 0x7F);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    if arcs.is_empty() {
        return Err(CertificateError("empty OID"));
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// A cursor over DER bytes.
#[derive(Clone, Copy)]
struct Der<'a> {
    bytes: &'a [u8],
}

/// One DER element: its tag, its contents, and its whole encoding.
struct Element<'a> {
    tag: u8,
    contents: Der<'a>,
    raw: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.bytes.first().copied()
    }

    fn next_element(&mut self) -> Result<Element<'a>, CertificateError> {
        let bytes = self.bytes;
        let (&tag, rest) = bytes.split_first().ok_or(CertificateError("truncated"))?;
        let (&first, rest) = rest.split_first().ok_or(CertificateError("truncated"))?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(CertificateError("bad length"));
            }
            let length = rest[..count]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (length, &rest[count..])
        };
        if rest.len() < length {
            return Err(CertificateError("truncated"));
        }
        let header = bytes.len() - rest.len();
        self.bytes = &rest[length..];
        Ok(Element {
            tag,
            contents: Der::new(&rest[..length]),
            raw: &bytes[..header + length],
        })
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Element<'a>, CertificateError> {
        let element = self.next_element()?;
        if element.tag != tag {
            return Err(CertificateError(what));
        }
        Ok(element)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn escaping_follows_rfc_2253() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape("#x "), "\\#x\\ ");
        assert_eq!(escape(" lead"), "\\ lead");
    }

    #[test]
    fn oids_print_dotted() {
        let email = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01];
        assert_eq!(dotted_oid(&email).unwrap(), "1.2.840.113549.1.9.1");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[][..], &[0x30], &[0x30, 0x84, 0xFF], &[0x30, 0x05, 0x30]] {
            assert!(subject_rfc2253(bytes).is_err());
        }
    }
}
