//! HTTP basic authentication against password hashes from the configuration (the metrics
//! endpoint's `metrics.auth`).
//!
//! Owns: [`BasicAuth`]: parsing `Authorization: Basic`, verifying the password against an
//! Argon2id (PHC) or SHA-256-crypt (`$5$`) hash, off the async threads and one at a time,
//! and remembering successful credentials (a SHA-256 digest of the header value, at most
//! [`CACHE_ENTRIES`]) so that a scraper costs one verification, not one per scrape.
//! Does not own: which hashes are acceptable (the configuration checks shape and cost), nor
//! the answer a refused request gets (`metrics`: 401 with `WWW-Authenticate`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64ct::Encoding as _;
use sha2::Digest as _;

/// Remembered credentials; when full, forgotten all at once (a scraper then pays one more
/// verification).
pub const CACHE_ENTRIES: usize = 64;

/// `WWW-Authenticate` of a refusal.
pub const CHALLENGE: &str = "Basic realm=\"tandem metrics\", charset=\"UTF-8\"";

/// Users and their password hashes, and the credentials already verified.
#[derive(Debug)]
pub struct BasicAuth {
    users: Vec<(String, String)>,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// One verification at a time: a flood of wrong passwords costs one core at most.
    verifying: tokio::sync::Semaphore,
}

impl BasicAuth {
    /// Accepts `users` (name, password hash).
    pub fn new(users: Vec<(String, String)>) -> Arc<Self> {
        Arc::new(Self {
            users,
            verified: Mutex::new(HashSet::new()),
            verifying: tokio::sync::Semaphore::new(1),
        })
    }

    /// Whether `authorization` (the header's value) names a user with its password.
    pub async fn check(self: &Arc<Self>, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let digest: [u8; 32] = sha2::Sha256::digest(value).into();
        if self.locked().contains(&digest) {
            return true;
        }
        let Some((user, password)) = credentials(value) else {
            return false;
        };
        let Some(hash) = self
            .users
            .iter()
            .find(|(name, _)| *name == user)
            .map(|(_, h)| h.clone())
        else {
            return false;
        };
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || verify(&password, &hash))
            .await
            .unwrap_or(false);
        if ok {
            let mut cache = self.locked();
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(digest);
        }
        ok
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// User and password of a `Basic` authorization value.
fn credentials(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64ct::Base64::decode_vec(token.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Whether `password` matches `hash` (Argon2id PHC or SHA-256-crypt).
pub fn verify(password: &str, hash: &str) -> bool {
    if hash.starts_with("$argon2id$") {
        use argon2::PasswordVerifier as _;
        let Ok(parsed) = argon2::PasswordHash::new(hash) else {
            return false;
        };
        return argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
    }
    let Some(rest) = hash.strip_prefix("$5$") else {
        return false;
    };
    let fields: Vec<&str> = rest.split('$').collect();
    let (rounds, salt, want) = match fields.as_slice() {
        [r, salt, want] if r.starts_with("rounds=") => (r[7..].parse().ok(), *salt, *want),
        [salt, want] => (Some(5000), *salt, *want),
        _ => return false,
    };
    let Some(params) = rounds.and_then(|r| sha_crypt::Sha256Params::new(r).ok()) else {
        return false;
    };
    let Ok(got) = sha_crypt::sha256_crypt_b64(password.as_bytes(), salt.as_bytes(), &params) else {
        return false;
    };
    // Constant time in the hash's content.
    got.len() == want.len()
        && got
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64ct::Base64::encode_string(format!("{user}:{password}").as_bytes())
        )
        .into_bytes()
    }

    #[test]
    fn sha256_crypt_and_argon2id_hashes_verify() {
        // `openssl passwd -5 -salt saltsalt secret`
        let sha = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
        assert!(verify("secret", sha));
        assert!(!verify("Secret", sha));
        let rounds = sha_crypt::sha256_crypt_b64(
            b"secret",
            b"salt",
            &sha_crypt::Sha256Params::new(10_000).expect("rounds"),
        )
        .expect("hash");
        assert!(verify("secret", &format!("$5$rounds=10000$salt${rounds}")));
        assert!(!verify("secret", &format!("$5$rounds=20000$salt${rounds}")));

        use argon2::PasswordHasher as _;
        let salt =
            argon2::password_hash::SaltString::encode_b64(b"sixteen byte slt").expect("salt");
        let params = argon2::Params::new(1024, 1, 1, None).expect("params");
        let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"secret", &salt)
            .expect("hash")
            .to_string();
        assert!(verify("secret", &a2));
        assert!(!verify("wrong", &a2));
        assert!(!verify("secret", "$1$md5$whatever"));
    }

    #[tokio::test]
    async fn basic_credentials_are_checked_and_successes_remembered() {
        let sha = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
        let auth = BasicAuth::new(vec![("prom".into(), sha.into())]);
        assert!(auth.check(Some(&header("prom", "secret"))).await);
        assert_eq!(auth.locked().len(), 1, "remembered");
        assert!(auth.check(Some(&header("prom", "secret"))).await);
        for bad in [
            header("prom", "wrong"),
            header("other", "secret"),
            b"Bearer abc".to_vec(),
            b"Basic !!!".to_vec(),
        ] {
            assert!(!auth.check(Some(&bad)).await, "{bad:?}");
        }
        assert!(!auth.check(None).await);
        assert_eq!(auth.locked().len(), 1, "failures are not remembered");
    }
}
