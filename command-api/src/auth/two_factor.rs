//! Two-factor sign-in: time-based one-time passwords (TOTP, RFC 6238: HMAC-SHA1, 6 digits,
//! 30-second steps, what every authenticator app reads from an `otpauth://` URI) and
//! single-use recovery codes for a lost authenticator.
//!
//! Pure functions; the key and the codes' hashes are stored by [`crate::identity`], outside
//! the event log.

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Seconds per time step.
pub const STEP_SECONDS: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Steps either side of the current one whose codes are accepted (clock drift, typing time).
const DRIFT_STEPS: i64 = 1;
/// Bytes of a TOTP key (RFC 4226 recommends 160 bits).
const KEY_BYTES: usize = 20;
/// How many recovery codes a user gets.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code (base32: 5 bits each, so 50 bits).
const RECOVERY_CODE_CHARS: usize = 10;
/// The issuer shown by authenticator apps.
const ISSUER: &str = "Workledger";

/// A TOTP key.
pub struct TotpKey(SecretBox<Vec<u8>>);

impl std::fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpKey(..)")
    }
}

impl TotpKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// A stored key.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// A key typed in as base32 (as [`TotpKey::base32`] gives it), if it is one.
    pub fn from_base32(text: &str) -> Option<Self> {
        BASE32_NOPAD
            .decode(text.trim().to_ascii_uppercase().as_bytes())
            .ok()
            .map(Self::from_bytes)
    }

    /// The code an authenticator shows at `unix_seconds`.
    pub fn code(&self, unix_seconds: i64) -> String {
        self.code_at(unix_seconds.div_euclid(STEP_SECONDS))
    }

    /// The raw key, to store.
    pub fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The key as authenticator apps take it typed in: base32 without padding.
    pub fn base32(&self) -> SecretString {
        SecretString::from(BASE32_NOPAD.encode(self.bytes()))
    }

    /// The `otpauth://` URI authenticator apps read from a QR code, for `account` (the email
    /// address, and the tenant where it is not the default one).
    pub fn uri(&self, account: &str) -> SecretString {
        let label = percent_encode(&format!("{ISSUER}:{account}"));
        SecretString::from(format!(
            "otpauth://totp/{label}?secret={}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            self.base32().expose_secret()
        ))
    }

    /// The code of time step `step`, as `DIGITS` decimal digits.
    fn code_at(&self, step: i64) -> String {
        let mut mac =
            Hmac::<Sha1>::new_from_slice(self.bytes()).expect("HMAC takes a key of any length");
        mac.update(&step.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        // dynamic truncation (RFC 4226 §5.3)
        let offset = usize::from(digest[digest.len() - 1] & 0x0f);
        let value = u32::from_be_bytes([
            digest[offset] & 0x7f,
            digest[offset + 1],
            digest[offset + 2],
            digest[offset + 3],
        ]);
        format!(
            "{:0width$}",
            value % 10u32.pow(DIGITS),
            width = DIGITS as usize
        )
    }

    /// The time step `code` belongs to at `unix_seconds`, if it is the code of the current
    /// step or of one next to it. Compared in constant time.
    pub fn verify(&self, code: &str, unix_seconds: i64) -> Option<i64> {
        let code = code.trim();
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = unix_seconds.div_euclid(STEP_SECONDS);
        // every candidate is computed, so the time taken does not tell which one matched
        let mut matched = None;
        for step in (now - DRIFT_STEPS)..=(now + DRIFT_STEPS) {
            if bool::from(self.code_at(step).as_bytes().ct_eq(code.as_bytes())) {
                matched = Some(step);
            }
        }
        matched
    }
}

/// Whether `code` has the shape of a TOTP code (digits only) rather than a recovery code.
pub fn is_totp_code(code: &str) -> bool {
    let code = code.trim();
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit())
}

/// New recovery codes, shown once as `xxxxx-xxxxx`.
pub fn recovery_codes() -> Vec<SecretString> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 7];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let encoded = BASE32_NOPAD.encode(&bytes).to_lowercase();
            let code = &encoded[..RECOVERY_CODE_CHARS];
            SecretString::from(format!("{}-{}", &code[..5], &code[5..]))
        })
        .collect()
}

/// The stored form of a recovery code: the SHA-256 of it without dashes, spaces or case, so
/// `ABCDE-FGHIJ`, `abcde fghij` and `abcdefghij` are the same code.
pub fn recovery_code_hash(code: &str) -> Vec<u8> {
    let normalized: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Sha256::digest(normalized.as_bytes()).to_vec()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 key.
    fn rfc_key() -> TotpKey {
        TotpKey::from_bytes(b"12345678901234567890".to_vec())
    }

    #[test]
    fn codes_are_those_of_rfc_6238() {
        // the RFC's 8-digit values, of which a 6-digit code is the last six
        for (time, expected) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(
                rfc_key().code_at(time / STEP_SECONDS),
                expected[2..],
                "{time}"
            );
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_names_its_step() {
        let key = rfc_key();
        let now = 1_111_111_111;
        let step = now / STEP_SECONDS;
        assert_eq!(key.verify(&key.code_at(step), now), Some(step));
        assert_eq!(key.verify(&key.code_at(step - 1), now), Some(step - 1));
        assert_eq!(key.verify(&key.code_at(step + 1), now), Some(step + 1));
        assert_eq!(
            key.verify(&format!(" {} ", key.code_at(step)), now),
            Some(step)
        );
        assert_eq!(key.verify(&key.code_at(step - 2), now), None);
        assert_eq!(key.verify(&key.code_at(step + 2), now), None);
        assert_eq!(key.verify("12345", now), None);
        assert_eq!(key.verify("abcdef", now), None);
        assert_eq!(
            TotpKey::generate().verify(&key.code_at(step), now),
            None,
            "another key's code (a one-in-a-million chance of a false failure is accepted)"
        );
    }

    #[test]
    fn the_uri_carries_the_key_and_the_parameters_apps_need() {
        let key = rfc_key();
        assert_eq!(
            key.base32().expose_secret(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        assert_eq!(
            key.uri("ann@example.com (acme)").expose_secret(),
            "otpauth://totp/Workledger:ann%40example.com%20%28acme%29\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Workledger&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(format!("{key:?}"), "TotpKey(..)");
        let again = TotpKey::from_base32("gezdgnbvgy3tqojqgezdgnbvgy3tqojq").unwrap();
        assert_eq!(again.bytes(), key.bytes());
        assert_eq!(again.code(59), "287082");
        assert!(TotpKey::from_base32("not base32!").is_none());
    }

    #[test]
    fn recovery_codes_are_distinct_and_match_however_they_are_typed() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let hashes: std::collections::HashSet<_> = codes
            .iter()
            .map(|c| recovery_code_hash(c.expose_secret()))
            .collect();
        assert_eq!(hashes.len(), RECOVERY_CODES);
        let code = codes[0].expose_secret();
        assert_eq!(code.len(), 11);
        assert!(!is_totp_code(code));
        assert_eq!(
            recovery_code_hash(code),
            recovery_code_hash(&code.replace('-', " ").to_uppercase())
        );
        assert!(is_totp_code(" 123456 "));
    }
}
