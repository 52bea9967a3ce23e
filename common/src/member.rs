//! The member id: the first 20 bytes of SHA-256 over a member's public key
//! (SubjectPublicKeyInfo DER), written as 40 lowercase hex digits. One parser
//! ([`MemberId::from_str`]) and one [`Display`](std::fmt::Display) serve every place that
//! reads or shows one: certificates, records, invitations, the command line, events.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Length of a member id in bytes.
pub const MEMBER_ID_BYTES: usize = 20;
/// Hex digits a short id shows to people (`group-chat`, ambiguity messages).
pub const SHORT_HEX_DIGITS: usize = 8;

/// A member id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MemberId([u8; MEMBER_ID_BYTES]);

/// Why a text is not a member id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemberIdError {
    /// Wrong length.
    #[error("invalid member id {0:?}: expected 40 hex digits")]
    Length(String),
    /// A character that is not a hex digit.
    #[error("invalid member id {0:?}: expected 40 hex digits")]
    NotHex(String),
}

impl MemberId {
    /// A member id of 40 times the hex digit `c`, for tests.
    #[cfg(test)]
    pub(crate) fn repeat(c: char) -> MemberId {
        c.to_string().repeat(40).parse().expect("a hex digit")
    }

    /// The id of the key whose SubjectPublicKeyInfo DER is `spki_der`.
    pub fn of_spki(spki_der: &[u8]) -> MemberId {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki_der);
        let mut b = [0u8; MEMBER_ID_BYTES];
        b.copy_from_slice(&digest.as_ref()[..MEMBER_ID_BYTES]);
        MemberId(b)
    }

    /// From its 20 raw bytes.
    pub const fn from_bytes(bytes: [u8; MEMBER_ID_BYTES]) -> MemberId {
        MemberId(bytes)
    }

    /// From a slice that must be exactly 20 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<MemberId> {
        <[u8; MEMBER_ID_BYTES]>::try_from(bytes).ok().map(MemberId)
    }

    /// Its 20 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; MEMBER_ID_BYTES] {
        &self.0
    }

    /// The first [`SHORT_HEX_DIGITS`] hex digits, for people.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(SHORT_HEX_DIGITS);
        s
    }

    /// Whether its hex form starts with `prefix` (lowercase hex digits).
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.to_string().starts_with(prefix)
    }
}

impl FromStr for MemberId {
    type Err = MemberIdError;

    /// Parses the canonical form: 40 lowercase hex digits (callers that take a
    /// person's typing lowercase it first).
    fn from_str(s: &str) -> Result<MemberId, MemberIdError> {
        if s.len() != 2 * MEMBER_ID_BYTES {
            return Err(MemberIdError::Length(s.chars().take(64).collect()));
        }
        let mut out = [0u8; MEMBER_ID_BYTES];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let digit = |b: u8| match b {
                b'0'..=b'9' => Ok(u32::from(b - b'0')),
                b'a'..=b'f' => Ok(u32::from(b - b'a' + 10)),
                _ => Err(MemberIdError::NotHex(s.to_string())),
            };
            out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(MemberId(out))
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberId({self})")
    }
}

impl serde::Serialize for MemberId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MemberId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MemberId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl PartialEq<str> for MemberId {
    fn eq(&self, other: &str) -> bool {
        other.parse::<MemberId>().is_ok_and(|m| m == *self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let text = "00112233445566778899aabbccddeeff01234567";
        let id: MemberId = text.parse().unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(id.as_bytes()[0], 0x00);
        assert_eq!(id.as_bytes()[19], 0x67);
        assert_eq!(id.short(), "00112233");
        // Only the canonical (lowercase) form is read, so one id has one spelling.
        assert!(text.to_ascii_uppercase().parse::<MemberId>().is_err());
    }

    #[test]
    fn malformed_ids_are_refused_with_the_reason() {
        assert!(matches!("abc".parse::<MemberId>(), Err(MemberIdError::Length(_))));
        assert!(matches!(
            "g0112233445566778899aabbccddeeff01234567".parse::<MemberId>(),
            Err(MemberIdError::NotHex(_))
        ));
        assert!(matches!(
            "+0112233445566778899aabbccddeeff0123456".parse::<MemberId>(),
            Err(MemberIdError::Length(_))
        ));
        // Multibyte characters of the right byte length are not hex either.
        assert!("é0112233445566778899aabbccddeeff0123456".parse::<MemberId>().is_err());
    }

    #[test]
    fn the_id_of_a_key_is_its_spki_digest() {
        let a = MemberId::of_spki(b"key a");
        assert_eq!(a, MemberId::of_spki(b"key a"));
        assert_ne!(a, MemberId::of_spki(b"key b"));
        assert_eq!(a.to_string().parse::<MemberId>().unwrap(), a);
    }
}
