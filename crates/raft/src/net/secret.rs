//! The cluster secret (`--cluster-secret-file`): with it, two nodes prove to each other
//! that they hold the same one before a connection carries anything, as Erlang nodes do
//! with their cookie. Each side sends a random nonce; each answers with an HMAC-SHA256,
//! under the secret, of both nonces, both node ids, the cluster id and its role (so one
//! side's proof cannot be sent back as the other's). The secret itself never travels, and
//! a recorded handshake is worth nothing with new nonces. It authenticates the peers; it
//! does not encrypt what they say afterwards.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::NodeId;

/// Bytes of a nonce.
pub const NONCE: usize = 32;
/// The fewest bytes a secret may have.
pub const MIN_SECRET: usize = 16;

/// A cluster secret, as a key.
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Who proves: the side that dialled, or the side that listens.
#[derive(Clone, Copy)]
pub enum Role {
    Dialer,
    Listener,
}

/// What a proof covers.
pub struct Handshake<'a> {
    pub cluster: &'a str,
    pub dialer: NodeId,
    pub listener: NodeId,
    pub dialer_nonce: &'a [u8],
    pub listener_nonce: &'a [u8],
}

impl Handshake<'_> {
    fn message(&self, role: Role) -> Vec<u8> {
        let role: &[u8] = match role {
            Role::Dialer => b"mom peer dialer\0",
            Role::Listener => b"mom peer listener\0",
        };
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(role);
        m.extend_from_slice(&(self.cluster.len() as u32).to_be_bytes());
        m.extend_from_slice(self.cluster.as_bytes());
        m.extend_from_slice(&self.dialer.to_be_bytes());
        m.extend_from_slice(&self.listener.to_be_bytes());
        m.extend_from_slice(self.dialer_nonce);
        m.extend_from_slice(self.listener_nonce);
        m
    }
}

impl Secret {
    /// A secret of at least `MIN_SECRET` bytes.
    pub fn new(bytes: &[u8]) -> Result<Secret, String> {
        if bytes.len() < MIN_SECRET {
            return Err(format!(
                "a cluster secret needs at least {MIN_SECRET} bytes, this one has {}",
                bytes.len()
            ));
        }
        Ok(Secret(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// `role`'s proof of this handshake.
    pub fn prove(&self, role: Role, h: &Handshake<'_>) -> Vec<u8> {
        hmac::sign(&self.0, &h.message(role)).as_ref().to_vec()
    }

    /// Whether `proof` is `role`'s proof of this handshake (compared in constant time).
    pub fn verify(&self, role: Role, h: &Handshake<'_>, proof: &[u8]) -> bool {
        hmac::verify(&self.0, &h.message(role), proof).is_ok()
    }
}

/// A new random nonce.
pub fn nonce() -> Result<Vec<u8>, String> {
    let mut n = vec![0u8; NONCE];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| "no randomness for a handshake nonce".to_string())?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_for_its_secret_role_and_handshake_only() {
        let s = Secret::new(b"0123456789abcdef").unwrap();
        let other = Secret::new(b"0123456789abcdeX").unwrap();
        let (nd, nl) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(nd, nl);
        let h = Handshake {
            cluster: "c",
            dialer: 1,
            listener: 2,
            dialer_nonce: &nd,
            listener_nonce: &nl,
        };
        let p = s.prove(Role::Dialer, &h);
        assert!(s.verify(Role::Dialer, &h, &p));
        assert!(
            !s.verify(Role::Listener, &h, &p),
            "a dialer's proof is no listener's"
        );
        assert!(!other.verify(Role::Dialer, &h, &p), "another secret");
        let replayed = Handshake {
            listener_nonce: &nd,
            ..h
        };
        assert!(!s.verify(Role::Dialer, &replayed, &p), "other nonces");
        assert!(Secret::new(b"short").is_err());
    }
}
