//! DKIM (RFC 6376) with the operator's keys: loaded from `[[dkim]]` at
//! start, used through `host.dkim-sign` for the message a transport is
//! delivering, and made by `posta dkim keygen`.
//!
//! The host signs rather than handing keys to plugins: a key in a guest's
//! linear memory is a key any bug in that guest (or its dependencies) can
//! leak, and a reloaded plugin would need it again. The transport builds
//! the wire bytes (MIME is its choice), so it passes them here and puts
//! the returned header in front. The signing itself is mail-auth's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

/// Header fields signed when present (RFC 6376 §5.4.1's advice plus the
/// one-click unsubscribe pair, which RFC 8058 requires to be signed).
const SIGNED: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Largest message the host hashes for a plugin: far above what any relay
/// takes, small enough that a guest cannot make the host copy its whole
/// memory over and over.
pub const MAX_SIGNED_BYTES: usize = 32 << 20;

/// One `[[dkim]]` entry of posta.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// The From domain this key signs for (`d=`).
    pub domain: String,
    /// The DNS selector (`s=`): the key is published at
    /// `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// PEM private key: RSA (PKCS#1 or PKCS#8, at least 2048 bits) or
    /// Ed25519 (PKCS#8). A relative path is read from the config file's
    /// directory.
    pub private_key_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("dkim {domain}: cannot read {path}: {source}")]
    Read {
        domain: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dkim {domain}: {reason}")]
    Key { domain: String, reason: String },
}

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// The keys of every configured domain, by lowercase domain.
#[derive(Default)]
pub struct DkimKeys {
    by_domain: HashMap<String, Signer>,
}

impl std::fmt::Debug for DkimKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_domain.keys()).finish()
    }
}

fn signer<K: SigningKey>(key: K, domain: &str, selector: &str) -> DkimSigner<K, Done> {
    DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// Reads a PEM private key as an RSA or Ed25519 signer.
fn parse_key(pem: &[u8], domain: &str, selector: &str) -> Result<Signer, String> {
    let der =
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("not a PEM private key (PKCS#1 or PKCS#8): {e}"))?;
    if let PrivateKeyDer::Pkcs8(p8) = &der
        && let Ok(key) = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
    {
        return Ok(Signer::Ed25519(signer(key, domain, selector)));
    }
    // Receivers ignore (or fail) shorter RSA keys (RFC 8301). ring reads
    // the key for signing; the rsa crate tells its size.
    let bits = {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        match &der {
            PrivateKeyDer::Pkcs1(k) => rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der()).ok(),
            PrivateKeyDer::Pkcs8(k) => rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der()).ok(),
            _ => None,
        }
        .map(|k| k.size() * 8)
    };
    if bits.is_some_and(|b| b < 2048) {
        return Err("RSA keys must have at least 2048 bits (RFC 8301)".into());
    }
    let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| format!("neither an RSA nor an Ed25519 key: {e}"))?;
    Ok(Signer::Rsa(signer(key, domain, selector)))
}

impl DkimKeys {
    /// Loads every configured key; `base` is the config file's directory.
    pub fn load(entries: &[DkimConfig], base: Option<&Path>) -> Result<DkimKeys, DkimError> {
        let mut by_domain = HashMap::new();
        for e in entries {
            let domain = e.domain.trim().trim_end_matches('.').to_ascii_lowercase();
            let invalid = |reason: String| DkimError::Key {
                domain: domain.clone(),
                reason,
            };
            if domain.is_empty() || !domain.contains('.') {
                return Err(invalid("domain must be a full domain name".into()));
            }
            if e.selector.is_empty()
                || !e
                    .selector
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(format!("selector {:?} is not a DNS label", e.selector)));
            }
            if by_domain.contains_key(&domain) {
                return Err(invalid("configured twice".into()));
            }
            let path = match base {
                Some(base) if e.private_key_file.is_relative() => base.join(&e.private_key_file),
                _ => e.private_key_file.clone(),
            };
            let pem = std::fs::read(&path).map_err(|source| DkimError::Read {
                domain: domain.clone(),
                path: path.clone(),
                source,
            })?;
            let signer =
                parse_key(&pem, &domain, &e.selector).map_err(|r| invalid(format!("{}: {r}", path.display())))?;
            by_domain.insert(domain, signer);
        }
        Ok(DkimKeys { by_domain })
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The `DKIM-Signature` header field for `message`, or `None` when its
    /// From domain has no key (unread when no sender's domain has one).
    /// `senders` are the From addresses of the
    /// messages the host handed the transport in this call: the message
    /// must be from one of them, so a plugin cannot have other mail signed.
    pub fn sign(&self, message: &[u8], senders: &[String]) -> Result<Option<String>, String> {
        // Nothing this call may sign has a key (mail from a domain without
        // one, or no keys at all): the answer is `None` whatever the message
        // says, so it is not parsed. Parsing every header of every message
        // was 4% of an SMTP send's CPU where keys covered other domains.
        // A batch's messages mostly share one sender: each run of the same
        // sender is looked up once, not once per message of the call.
        if self.by_domain.is_empty()
            || !senders
                .chunk_by(|a, b| a == b)
                .any(|run| self.by_domain.contains_key(&domain_of(&run[0])))
        {
            return Ok(None);
        }
        if message.len() > MAX_SIGNED_BYTES {
            return Err(format!("message is over {} MiB", MAX_SIGNED_BYTES >> 20));
        }
        let from = from_address(message)?;
        if !senders.iter().any(|s| from.eq_ignore_ascii_case(s)) {
            return Err(format!(
                "the message is from {from}, but this call delivers mail from {}; only that may be signed",
                senders.join(", ")
            ));
        }
        let Some(signer) = self.by_domain.get(&domain_of(&from)) else {
            return Ok(None);
        };
        let signature = match signer {
            Signer::Rsa(s) => s.sign(message),
            Signer::Ed25519(s) => s.sign(message),
        };
        signature
            .map(|s| Some(s.to_header()))
            .map_err(|e| format!("cannot sign: {e}"))
    }
}

/// The domain of `address` as keys are stored: lowercase, no final dot.
fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

/// The address of the message's single From header field.
fn from_address(message: &[u8]) -> Result<String, String> {
    let parsed = mail_parser::MessageParser::new()
        .parse_headers(message)
        .ok_or("not an RFC 5322 message")?;
    let froms = parsed.header_values("From").count();
    if froms != 1 {
        return Err(format!(
            "a message needs exactly one From header field, this one has {froms}"
        ));
    }
    parsed
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_string)
        .ok_or_else(|| "the From header field has no address".to_string())
}

/// Which kind of key `posta dkim keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    /// RSA 2048 with SHA-256: what every receiver verifies.
    Rsa,
    /// Ed25519 (RFC 8463): short, fast; not every receiver verifies it yet,
    /// so publish it beside an RSA key, not instead.
    Ed25519,
}

/// A new key: its PKCS#8 PEM and the DNS TXT record that publishes it.
pub struct Generated {
    pub pem: String,
    /// `SELECTOR._domainkey.DOMAIN`
    pub record_name: String,
    /// `v=DKIM1; k=rsa; p=…`
    pub record: String,
}

/// Makes a key pair for `domain` / `selector`.
pub fn keygen(algorithm: Algorithm, domain: &str, selector: &str) -> Result<Generated, String> {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (pem, k, public) = match algorithm {
        Algorithm::Rsa => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(|e| e.to_string())?;
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?;
            let public = key.to_public_key().to_public_key_der().map_err(|e| e.to_string())?;
            (pem.to_string(), "rsa", public.as_bytes().to_vec())
        }
        Algorithm::Ed25519 => {
            use rsa::pkcs8::{LineEnding, SecretDocument};
            let der = Ed25519Key::generate_pkcs8().map_err(|e| e.to_string())?;
            let key = Ed25519Key::from_pkcs8_der(&der).map_err(|e| e.to_string())?;
            let pem = SecretDocument::try_from(der.as_slice())
                .and_then(|d| d.to_pem("PRIVATE KEY", LineEnding::LF))
                .map_err(|e| e.to_string())?;
            // RFC 8463: the raw 32-byte public key, not SPKI.
            (pem.to_string(), "ed25519", key.public_key())
        }
    };
    // The key must load as the server will load it.
    parse_key(pem.as_bytes(), domain, selector)?;
    Ok(Generated {
        pem,
        record_name: format!("{selector}._domainkey.{domain}"),
        record: format!("v=DKIM1; k={k}; p={}", b64(&public)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(algorithm: Algorithm) -> (DkimKeys, Generated) {
        let g = keygen(algorithm, "example.org", "posta").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.pem"), &g.pem).unwrap();
        let cfg = DkimConfig {
            domain: "Example.ORG".into(),
            selector: "posta".into(),
            private_key_file: "k.pem".into(),
        };
        (DkimKeys::load(&[cfg], Some(dir.path())).unwrap(), g)
    }

    const MESSAGE: &[u8] = b"From: News <news@example.org>\r\nTo: a@example.net\r\nSubject: Hi\r\n\r\nBody\r\n";

    #[test]
    fn signs_mail_from_a_configured_domain_only() {
        for algorithm in [Algorithm::Rsa, Algorithm::Ed25519] {
            let (keys, g) = keys(algorithm);
            assert!(g.record.starts_with("v=DKIM1; k="), "{}", g.record);
            let header = keys.sign(MESSAGE, &["NEWS@example.org".into()]).unwrap().unwrap();
            assert!(header.starts_with("DKIM-Signature: v=1; a="), "{header}");
            assert!(
                header.contains("d=example.org") && header.contains("s=posta"),
                "{header}"
            );
            assert!(header.contains("c=relaxed/relaxed"), "{header}");
            assert!(header.ends_with("\r\n"), "{header:?}");
            let other = b"From: x@example.com\r\n\r\nBody\r\n";
            assert_eq!(keys.sign(other, &["x@example.com".into()]).unwrap(), None);
        }
    }

    #[test]
    fn refuses_to_sign_for_another_sender() {
        let (keys, _) = keys(Algorithm::Ed25519);
        let e = keys.sign(MESSAGE, &["ceo@example.org".into()]).unwrap_err();
        assert!(e.contains("only that may be signed"), "{e}");
        let two = b"From: news@example.org\r\nFrom: ceo@example.org\r\n\r\nx\r\n";
        assert!(
            keys.sign(two, &["news@example.org".into()])
                .unwrap_err()
                .contains("exactly one From")
        );
        assert!(keys.sign(b"", &["news@example.org".into()]).is_err());
        // A batch's call may sign mail from any of its messages' senders.
        let batch = ["ceo@example.org".to_string(), "news@example.org".to_string()];
        assert!(keys.sign(MESSAGE, &batch).unwrap().is_some());
        // A call whose senders have no key signs nothing, whatever the
        // message claims to be from.
        assert_eq!(keys.sign(MESSAGE, &["x@example.com".into()]).unwrap(), None);
        assert_eq!(keys.sign(b"", &["x@example.com".into()]).unwrap(), None);
    }

    #[test]
    fn short_rsa_keys_are_refused() {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let e = parse_key(pem.as_bytes(), "example.org", "s").err().unwrap();
        assert!(e.contains("2048"), "{e}");
    }
}
