//! Record signature checks. Ed25519 signatures are checked by ZIP-215's rules
//! (`ed25519-zebra`), one at a time or in batches: under ZIP-215 a batch accepts exactly
//! what checking each alone accepts, so whether a node batched, and how, never changes
//! which records it takes. (RFC 8032 checks, aws-lc's among them, leave that open for
//! crafted signatures: a batch and single checks could disagree, and nodes with it.)
//! Other key types are checked one at a time by aws-lc.

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes, batch};

use crate::pki::{Cert, KeyType};

/// One signature to check: the signer's key type and public key, what was signed, and
/// the signature.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// The key's type.
    pub key_type: KeyType,
    /// The public key (raw for Ed25519, as in the certificate).
    pub key: &'a [u8],
    /// What was signed.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a [u8],
}

impl<'a> Check<'a> {
    /// `signature` over `message` by the key of `cert`.
    pub fn by(cert: &'a Cert, message: &'a [u8], signature: &'a [u8]) -> Check<'a> {
        Check {
            key_type: cert.key_type,
            key: &cert.public_key,
            message,
            signature,
        }
    }

    /// Whether it verifies.
    pub fn verify(&self) -> bool {
        match self.key_type {
            KeyType::Ed25519 => self.ed25519_alone(),
            other => other
                .verify_algorithm()
                .verify_signature(self.key, self.message, self.signature)
                .is_ok(),
        }
    }

    /// An Ed25519 check alone, with the key decoded once per key (see [`KEYS`]).
    fn ed25519_alone(&self) -> bool {
        let (Ok(key), Ok(sig)) = (<[u8; 32]>::try_from(self.key), <[u8; 64]>::try_from(self.signature)) else {
            return false;
        };
        let cached = KEYS.lock().ok().and_then(|k| k.get(&key).copied());
        let vk = match cached {
            Some(vk) => vk,
            None => {
                let Ok(vk) = VerificationKey::try_from(key) else {
                    return false;
                };
                if let Ok(mut keys) = KEYS.lock() {
                    if keys.len() >= KEYS_CAP {
                        // Its memory too: certificates a member sends choose the keys.
                        *keys = HashMap::new();
                    }
                    keys.insert(key, vk);
                }
                vk
            }
        };
        vk.verify(&Signature::from(sig), self.message).is_ok()
    }

    /// The batch item of an Ed25519 check whose key and signature have the right
    /// lengths (others fail as they stand).
    fn ed25519(&self) -> Option<batch::Item> {
        let key: [u8; 32] = self.key.try_into().ok()?;
        let sig: [u8; 64] = self.signature.try_into().ok()?;
        Some(batch::Item::from((
            VerificationKeyBytes::from(key),
            Signature::from(sig),
            self.message,
        )))
    }
}

/// Ed25519 keys decoded (a point decompression: a square root, about a fifth of a
/// check alone); a group has few keys. Emptied when full.
static KEYS: std::sync::LazyLock<Mutex<HashMap<[u8; 32], VerificationKey>>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));
/// Most keys [`KEYS`] holds.
const KEYS_CAP: usize = 4_096;

/// Whether `signature` over `message` verifies with `cert`'s key.
pub fn verify(cert: &Cert, message: &[u8], signature: &[u8]) -> bool {
    Check::by(cert, message, signature).verify()
}

/// Whether each check verifies, by position: the Ed25519 ones in one batch (bisected
/// when it fails, to find which), the others one at a time. The same answers as
/// [`Check::verify`] on each, in less time when many are Ed25519.
pub fn verify_all(checks: &[Check<'_>]) -> Vec<bool> {
    let mut out = vec![false; checks.len()];
    let mut ed25519 = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        if c.key_type != KeyType::Ed25519 {
            out[i] = c.verify();
        } else if let Some(item) = c.ed25519() {
            ed25519.push((i, c, item));
        }
    }
    settle(&ed25519, &mut out);
    out
}

/// Checks `items` as one batch; when it fails, [`bisect`] finds which failed.
fn settle(items: &[(usize, &Check<'_>, batch::Item)], out: &mut [bool]) {
    match items {
        [] => {}
        [(i, check, _)] => out[*i] = check.ed25519_alone(),
        _ => match batch_ok(items) {
            Ok(true) => {
                for (i, _, _) in items {
                    out[*i] = true;
                }
            }
            Ok(false) => bisect(items, out),
            Err(NoRandomness) => alone(items, out),
        },
    }
}

/// Checks each of `items` alone.
fn alone(items: &[(usize, &Check<'_>, batch::Item)], out: &mut [bool]) {
    for (i, check, _) in items {
        out[*i] = check.ed25519_alone();
    }
}

/// Below this many, a failed batch's items are checked alone.
const BISECT_MIN: usize = 8;

/// Finds which of `items` (a batch that failed) fail: each half as a batch, and only a
/// failing half further. When both halves fail, every item is checked alone: a frame
/// of bad signatures then costs about 2n batch items and n single checks, and one bad
/// signature among n about 3n batch items (not n log n: a member sending frames of bad
/// signatures must not make a node work much harder than single checks would).
fn bisect(items: &[(usize, &Check<'_>, batch::Item)], out: &mut [bool]) {
    if items.len() <= BISECT_MIN {
        return alone(items, out);
    }
    let (left, right) = items.split_at(items.len() / 2);
    let (Ok(left_ok), Ok(right_ok)) = (batch_ok(left), batch_ok(right)) else {
        return alone(items, out);
    };
    for (half, ok) in [(left, left_ok), (right, right_ok)] {
        if ok {
            for (i, _, _) in half {
                out[*i] = true;
            }
        } else if !left_ok && !right_ok {
            alone(half, out);
        } else {
            bisect(half, out);
        }
    }
}

/// The system's random source failed: a batch cannot be checked safely.
struct NoRandomness;

/// Whether `items` pass as one batch.
fn batch_ok(items: &[(usize, &Check<'_>, batch::Item)]) -> Result<bool, NoRandomness> {
    #[cfg(test)]
    {
        BATCHED.with(|n| n.set(n.get() + items.len()));
        BATCHES.with(|n| n.set(n.get() + 1));
    }
    let mut b = batch::Verifier::new();
    for (_, _, item) in items {
        b.queue(item.clone());
    }
    let mut rng = Coefficients { failed: false };
    let ok = b.verify(&mut rng).is_ok();
    if rng.failed {
        // Coefficients a sender could guess would let a crafted batch pass: the batch's
        // answer is not used, its items are checked alone (the same answers, slower).
        tracing::warn!(
            "the system's random source failed: {} signatures checked one at a time",
            items.len()
        );
        return Err(NoRandomness);
    }
    Ok(ok)
}

/// The random coefficients of a batch, from the system's random source (getrandom).
/// Its failure is remembered instead of ending the process, as `OsRng` would.
struct Coefficients {
    failed: bool,
}

impl rand_core::RngCore for Coefficients {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        #[cfg(test)]
        let broken = RANDOM_FAILS.with(std::cell::Cell::get);
        #[cfg(not(test))]
        let broken = false;
        if broken || rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, dest).is_err() {
            self.failed = true;
            dest.fill(0);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for Coefficients {}

#[cfg(test)]
thread_local! {
    /// Items checked in batches on this thread (tests count the work).
    static BATCHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Batches checked on this thread.
    static BATCHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Whether the random source fails on this thread (tests break it).
    static RANDOM_FAILS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Batches and items in them checked on this thread so far (tests count the work).
#[cfg(test)]
pub(crate) fn batch_work() -> (usize, usize) {
    (BATCHES.with(|n| n.get()), BATCHED.with(|n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::edwards::CompressedEdwardsY;

    /// ZIP-215's small-order cases (as ed25519-zebra's own tests make them): every
    /// canonical encoding of the 8 torsion points and the 6 low-order non-canonical
    /// encodings, as key A and as R, with s = 0, over the message "Zcash": 196
    /// signatures, each valid under ZIP-215 ([8][s]B = [8]R + [8][k]A holds with every
    /// term 0), most of them invalid under RFC 8032.
    fn small_order_cases() -> Vec<([u8; 32], [u8; 64])> {
        let mut encodings: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|p| p.compress().to_bytes()).collect();
        // The non-canonical low-order ones: y = 1 and y = -1 with the sign bit set, then
        // y + p for the field elements that have such an encoding, either sign.
        let mut y1 = [0u8; 32];
        y1[0] = 1;
        y1[31] = 128;
        let mut ym1 = [255u8; 32];
        ym1[0] = 236;
        let mut low = vec![y1, ym1];
        for i in 0..19u8 {
            let mut x = [255u8; 32];
            x[0] = 237 + i;
            x[31] = 127;
            for sign in [0u8, 128] {
                let mut e = x;
                e[31] |= sign;
                if let Some(p) = CompressedEdwardsY(e).decompress()
                    && p.is_small_order()
                {
                    low.push(e);
                }
            }
        }
        assert_eq!(low.len(), 6, "ZIP-215 names 6 low-order non-canonical encodings");
        encodings.extend(low);
        let mut cases = Vec::new();
        for a in &encodings {
            for r in &encodings {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(r);
                cases.push((*a, sig));
            }
        }
        cases
    }

    fn check<'a>(key: &'a [u8], signature: &'a [u8]) -> Check<'a> {
        Check {
            key_type: KeyType::Ed25519,
            key,
            message: b"Zcash",
            signature,
        }
    }

    #[test]
    fn zip215_small_order_vectors_pass_alone_and_in_any_batch_and_rfc8032_disagrees() {
        let cases = small_order_cases();
        assert_eq!(cases.len(), 196);
        let checks: Vec<Check<'_>> = cases.iter().map(|(a, s)| check(a, s)).collect();
        assert!(checks.iter().all(Check::verify), "single checks");
        assert!(verify_all(&checks).into_iter().all(|ok| ok), "one batch");
        for size in [2, 7, 64] {
            for part in checks.chunks(size) {
                assert!(verify_all(part).into_iter().all(|ok| ok), "batches of {size}");
            }
        }
        // What aws-lc (RFC 8032) makes of them: why it never checks a record.
        let rfc8032 = checks
            .iter()
            .filter(|c| {
                KeyType::Ed25519
                    .verify_algorithm()
                    .verify_signature(c.key, c.message, c.signature)
                    .is_ok()
            })
            .count();
        assert!(rfc8032 < cases.len(), "aws-lc accepts {rfc8032} of 196");
    }

    /// With a key of small order, a signature (small-order R, s = 0) verifies for any
    /// message under ZIP-215: such keys are refused in certificates.
    #[test]
    fn keys_of_small_order_are_refused_in_certificates() {
        for (key, sig) in small_order_cases().iter().step_by(15) {
            assert!(!crate::pki::ed25519_key_is_sound(key), "{key:?}");
            let mut forged = check(key, sig);
            forged.message = b"anything at all";
            assert!(forged.verify(), "why: it verifies for any message");
        }
        let real = ed25519_zebra::SigningKey::from([7u8; 32]);
        let real: [u8; 32] = VerificationKeyBytes::from(VerificationKey::from(&real)).into();
        assert!(crate::pki::ed25519_key_is_sound(&real));
        assert!(!crate::pki::ed25519_key_is_sound(&real[..31]));
    }

    /// Keys, messages and signatures, by position.
    type Signed = (Vec<[u8; 32]>, Vec<Vec<u8>>, Vec<[u8; 64]>);

    /// `n` good checks over distinct keys and messages.
    fn good(n: u8) -> Signed {
        let keys: Vec<ed25519_zebra::SigningKey> = (0..n)
            .map(|i| ed25519_zebra::SigningKey::from([i.wrapping_add(1); 32]))
            .collect();
        let messages: Vec<Vec<u8>> = (0..n).map(|i| vec![i; 100]).collect();
        let sigs = keys.iter().zip(&messages).map(|(k, m)| k.sign(m).to_bytes()).collect();
        let vks = keys
            .iter()
            .map(|k| VerificationKeyBytes::from(VerificationKey::from(k)).into())
            .collect();
        (vks, messages, sigs)
    }

    fn checks_of<'a>(vks: &'a [[u8; 32]], messages: &'a [Vec<u8>], sigs: &'a [[u8; 64]]) -> Vec<Check<'a>> {
        (0..vks.len())
            .map(|i| Check {
                key_type: KeyType::Ed25519,
                key: &vks[i],
                message: &messages[i],
                signature: &sigs[i],
            })
            .collect()
    }

    /// A random source that fails gives the same answers as single checks (a forged
    /// signature among good ones is still refused, the good ones taken), no panic.
    #[test]
    fn a_failing_random_source_falls_back_to_single_checks() {
        let (vks, messages, mut sigs) = good(24);
        sigs[7][40] ^= 1;
        let checks = checks_of(&vks, &messages, &sigs);
        let expected: Vec<bool> = checks.iter().map(Check::verify).collect();
        assert_eq!(expected.iter().filter(|ok| !**ok).count(), 1);
        RANDOM_FAILS.with(|f| f.set(true));
        let got = std::panic::catch_unwind(|| verify_all(&checks));
        RANDOM_FAILS.with(|f| f.set(false));
        assert_eq!(got.expect("no panic"), expected);
    }

    /// Red-team finding: bisecting every failed batch down to single items made a frame
    /// of bad signatures cost n log2 n batch items; now at most about 2n, and one bad
    /// signature about 3n.
    #[test]
    fn a_frame_of_bad_signatures_costs_about_as_much_as_single_checks() {
        let (vks, messages, mut sigs) = good(64);
        for s in &mut sigs {
            s[40] ^= 1;
        }
        let checks = checks_of(&vks, &messages, &sigs);
        BATCHED.with(|n| n.set(0));
        assert!(verify_all(&checks).iter().all(|ok| !ok));
        assert!(
            BATCHED.with(|n| n.get()) <= 2 * 64,
            "{} batch items",
            BATCHED.with(|n| n.get())
        );
        let (vks, messages, mut sigs) = good(64);
        sigs[33][40] ^= 1;
        let checks = checks_of(&vks, &messages, &sigs);
        BATCHED.with(|n| n.set(0));
        let got = verify_all(&checks);
        assert_eq!(got.iter().filter(|ok| !**ok).count(), 1);
        assert!(!got[33]);
        assert!(
            BATCHED.with(|n| n.get()) <= 3 * 64,
            "{} batch items",
            BATCHED.with(|n| n.get())
        );
    }

    /// Red-team finding: nothing showed that a batch refuses what a single check
    /// refuses. A non-canonical s (s + l), an R that is no point and a key that is no
    /// point, among good ones in every position: a batch answers as single checks do.
    #[test]
    fn batches_answer_as_single_checks_do_on_edge_cases() {
        let (mut vks, messages, mut sigs) = good(12);
        // s + l: the group order added to s (little-endian), still 32 bytes.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for k in 0..32 {
            let v = u16::from(sigs[2][32 + k]) + u16::from(L[k]) + carry;
            sigs[2][32 + k] = v as u8;
            carry = v >> 8;
        }
        // Bytes that decode to no point, as R and as a key.
        let not_a_point = (0u8..=255)
            .map(|b| [b; 32])
            .find(|e| CompressedEdwardsY(*e).decompress().is_none())
            .unwrap();
        sigs[5][..32].copy_from_slice(&not_a_point);
        vks[8] = not_a_point;
        let checks = checks_of(&vks, &messages, &sigs);
        let single: Vec<bool> = checks.iter().map(Check::verify).collect();
        assert_eq!(single.iter().filter(|ok| !**ok).count(), 3, "{single:?}");
        for start in 0..checks.len() {
            let mut turned = checks.clone();
            turned.rotate_left(start);
            let mut want = single.clone();
            want.rotate_left(start);
            assert_eq!(verify_all(&turned), want, "rotated by {start}");
        }
    }

    #[test]
    fn a_bad_signature_in_a_batch_is_found_and_only_it_fails() {
        let keys: Vec<ed25519_zebra::SigningKey> = (0..40u8)
            .map(|i| ed25519_zebra::SigningKey::from([i.wrapping_add(1); 32]))
            .collect();
        let messages: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100]).collect();
        let mut sigs: Vec<[u8; 64]> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m).to_bytes()).collect();
        let vks: Vec<[u8; 32]> = keys
            .iter()
            .map(|k| VerificationKeyBytes::from(VerificationKey::from(k)).into())
            .collect();
        for bad in [0usize, 17, 39] {
            sigs[bad][40] ^= 1;
        }
        let short = [0u8; 10];
        let mut checks: Vec<Check<'_>> = (0..40)
            .map(|i| Check {
                key_type: KeyType::Ed25519,
                key: &vks[i],
                message: &messages[i],
                signature: &sigs[i],
            })
            .collect();
        checks.push(check(&vks[1], &short));
        let got = verify_all(&checks);
        let want: Vec<bool> = (0..41).map(|i| ![0, 17, 39, 40].contains(&i)).collect();
        assert_eq!(got, want);
        let single: Vec<bool> = checks.iter().map(Check::verify).collect();
        assert_eq!(single, want, "the same as one at a time");
    }
}
