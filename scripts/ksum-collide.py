#!/usr/bin/env python3
"""Finds two disjoint item sets A and B, 64 items each, whose range fingerprints collide
under the additive fingerprint of common/src/sync.rs: equal count and equal wrapping
u128 sum of the item hashes. Standard library only.

The fingerprint being attacked
------------------------------
An item is (id: 16 bytes, version: u64, digest: 16 bytes). Its hash is
SHA-256(id || version as 8 bytes big-endian || digest) cut to the first 16 bytes, and a
range's fingerprint is (count, sum of those hashes read as little-endian u128, mod 2^128).
If sum(hash(a) for a in A) == sum(hash(b) for b in B) and |A| == |B|, a peer holding
base ∪ A and one holding base ∪ B compute equal fingerprints for every range that covers
all of A ∪ B, so reconciliation declares the range in sync and neither peer ever learns of
the other's items. The hash being a cryptographic hash does not help: summing hashes makes
the fingerprint a k-sum problem, and k-sum with large k is easy.

The algorithm: Wagner's k-tree (generalised birthday), k = 2^7 = 128, n = 128 bits
-------------------------------------------------------------------------------
Equal sums means sum(hash(A)) - sum(hash(B)) == 0 (mod 2^128). Make 128 lists of fresh
random items: lists 0..63 hold the candidates for A, valued hash(item); lists 64..127 hold
the candidates for B, valued -hash(item) mod 2^128. Picking one element from each list with
total 0 gives the collision. The lists form the leaves of a binary tree of depth 7; each
inner node merges its two children by keeping every pair (x, y) whose sum is zero in the
next band of low bits (x + y has those bits zero exactly when bits of y are the negation of
x's there, found with a dict keyed by the band), storing x + y and a back-pointer (i, j).
Sums stay zero in all lower bands already cleared, so after the 7th level the root's values
are zero in all 128 bits.

Merging two lists of size N on b bits yields about N^2 / 2^b pairs. With N = 2^16 and
b = 16 the sizes stay 2^16 at every level, and the root merge must clear the remaining
128 - 6*16 = 32 bits from 2^16 x 2^16 pairs: one solution expected (Wagner's bound
n / (1 + lg k) = 16 bits per level, cost about k * 2^16 hash evaluations). For margin the
6th level clears only 13 bits, growing its two lists to about 2^19, so the root clears
35 bits from 2^38 pairs: about 8 solutions expected (failure chance about e^-8); if none
turn up the whole search reruns with fresh items. Total work is about 2^23 item hashes and
2^23 dict operations, seconds to minutes in CPython, instead of the 2^64 a plain birthday
search on the 128-bit sum would need. That is the point: the plain sum fingerprint offers
no real collision resistance against someone who chooses items (records) freely, since any
peer can mint records with ids and digests of its choosing.

Tree processing is depth-first, so only one list per level is held at a time; leaf items
are never stored, only re-derived: item (attempt, list, index) has id and digest taken
from SHA-256("ksum-collide" || seed || attempt || list || index), so a --seed run is
reproducible. Back-pointers are kept as array('I') pairs per node to rebuild the chosen
leaves. The result is verified from the item bytes before it is written.

Output: one comment line, then one item per line, `A <id hex> <version> <digest hex>` or
`B <id hex> <version> <digest hex>`.
"""

import argparse
import hashlib
import os
import sys
import time
from array import array

LEVELS = 7  # k = 2^7 lists
K = 1 << LEVELS
HALF = K // 2  # lists 0..HALF-1 give A, HALF..K-1 give B
LOG_LIST = 16  # leaf list size 2^16
# Bits cleared at levels 1..7 (the last entry is the root); sums to 128.
BANDS = [16, 16, 16, 16, 16, 13, 35]
VERSION = 1
M128 = (1 << 128) - 1
assert sum(BANDS) == 128 and len(BANDS) == LEVELS


def item_hash(item_id, version, digest):
    """The item hash of common/src/sync.rs as a little-endian u128."""
    h = hashlib.sha256(item_id + version.to_bytes(8, "big") + digest).digest()
    return int.from_bytes(h[:16], "little")


class Source:
    """Deterministic item material from a seed."""

    def __init__(self, seed_bytes):
        self.prefix = hashlib.sha256(b"ksum-collide\0" + seed_bytes)

    def item(self, attempt, lst, idx):
        h = self.prefix.copy()
        h.update(attempt.to_bytes(4, "big") + lst.to_bytes(2, "big") + idx.to_bytes(4, "big"))
        m = h.digest()
        return m[:16], VERSION, m[16:]

    def leaf_values(self, attempt, lst, n):
        base = self.prefix.copy()
        base.update(attempt.to_bytes(4, "big") + lst.to_bytes(2, "big"))
        ver = VERSION.to_bytes(8, "big")
        sha = hashlib.sha256
        fb = int.from_bytes
        out = []
        append = out.append
        for idx in range(n):
            h = base.copy()
            h.update(idx.to_bytes(4, "big"))
            m = h.digest()
            append(fb(sha(m[:16] + ver + m[16:]).digest()[:16], "little"))
        if lst >= HALF:
            out = [(-v) & M128 for v in out]
        return out


def merge(left, right, shift, width, limit=None):
    """Pairs (i, j) with left[i] + right[j] zero in bits [shift, shift + width).
    Returns (sums, left indices, right indices); stops after `limit` pairs if given."""
    mask = (1 << width) - 1
    table = {}
    get = table.get
    for j, b in enumerate(right):
        key = (b >> shift) & mask
        e = get(key)
        if e is None:
            table[key] = j
        elif type(e) is int:
            table[key] = [e, j]
        else:
            e.append(j)
    vals = []
    bl = array("I")
    br = array("I")
    va, la, ra = vals.append, bl.append, br.append
    for i, a in enumerate(left):
        e = get((-(a >> shift)) & mask)
        if e is None:
            continue
        if type(e) is int:
            va((a + right[e]) & M128)
            la(i)
            ra(e)
        else:
            for j in e:
                va((a + right[j]) & M128)
                la(i)
                ra(j)
        if limit is not None and len(vals) >= limit:
            break
    return vals, bl, br


def search(src, attempt, log):
    """One run of the k-tree. Returns the list of (list, index) leaves, or None."""
    n = 1 << LOG_LIST
    back = {}
    shifts = [sum(BANDS[:lv]) for lv in range(LEVELS)]  # shift of level lv+1's band
    done = [0]

    def build(level, idx):
        if level == 0:
            vals = src.leaf_values(attempt, idx, n)
            done[0] += 1
            if done[0] % 16 == 0:
                log(f"  {done[0]}/{K} leaf lists hashed")
            return vals
        left = build(level - 1, 2 * idx)
        right = build(level - 1, 2 * idx + 1)
        limit = 1 if level == LEVELS else None
        vals, bl, br = merge(left, right, shifts[level - 1], BANDS[level - 1], limit)
        back[(level, idx)] = (bl, br)
        if level >= LEVELS - 2:
            log(f"  level {level} node {idx}: {len(vals)} sums zero in low {shifts[level - 1] + BANDS[level - 1]} bits")
        return vals

    root = build(LEVELS, 0)
    if not root:
        return None
    assert root[0] == 0

    def leaves(level, idx, pos):
        if level == 0:
            return [(idx, pos)]
        bl, br = back[(level, idx)]
        return leaves(level - 1, 2 * idx, bl[pos]) + leaves(level - 1, 2 * idx + 1, br[pos])

    return leaves(LEVELS, 0, 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, help="derive items from this seed (reproducible); default: random")
    ap.add_argument("--out", help="write the fixture here instead of stdout")
    args = ap.parse_args()

    t0 = time.monotonic()
    c0 = time.process_time()

    def log(msg):
        print(f"[{time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    if args.seed is not None:
        seed_bytes = args.seed.to_bytes(8, "big", signed=True)
        origin = f"--seed {args.seed}"
    else:
        seed_bytes = os.urandom(32)
        origin = "(random seed)"
    src = Source(seed_bytes)

    attempt = 0
    while True:
        log(f"attempt {attempt}: {K} lists of 2^{LOG_LIST} items, bands {BANDS}")
        picks = search(src, attempt, log)
        if picks is not None:
            break
        log(f"attempt {attempt}: root merge found nothing; retrying with fresh items")
        attempt += 1

    a_items = [src.item(attempt, lst, idx) for lst, idx in picks if lst < HALF]
    b_items = [src.item(attempt, lst, idx) for lst, idx in picks if lst >= HALF]

    # Verify from the item bytes alone.
    sum_a = sum(item_hash(*it) for it in a_items) & M128
    sum_b = sum(item_hash(*it) for it in b_items) & M128
    assert len(a_items) == len(b_items) == HALF, (len(a_items), len(b_items))
    assert sum_a == sum_b, (hex(sum_a), hex(sum_b))
    ids = [it[0] for it in a_items + b_items]
    assert len(set(ids)) == len(ids), "ids not distinct"
    assert set(a_items) != set(b_items) and not set(a_items) & set(b_items)
    assert all(len(i) == 16 and len(d) == 16 and v == VERSION for i, v, d in a_items + b_items)

    lines = [
        f"# generated by scripts/ksum-collide.py {origin}: two item sets with equal count "
        "and equal wrapping u128 sum of truncated SHA-256 item hashes"
    ]
    for tag, items in (("A", a_items), ("B", b_items)):
        for i, v, d in items:
            lines.append(f"{tag} {i.hex()} {v} {d.hex()}")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)

    log(f"verified: |A| = |B| = {HALF}, sum(A) = sum(B) = {sum_a:#034x} (u128), attempts {attempt + 1}")
    print(
        f"wall {time.monotonic() - t0:.1f}s, cpu {time.process_time() - c0:.1f}s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
