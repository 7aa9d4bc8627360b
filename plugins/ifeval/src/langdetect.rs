//! The `langdetect` detector (Cybozu's n-gram Naive Bayes with random sampling) as the
//! reference runs it: `DetectorFactory.seed = 0`, the installed profiles in the factory's
//! order, CPython's Mersenne Twister for `random.choice` and `random.gauss`, so the same
//! text yields the same language.

use std::sync::LazyLock;

use regex::Regex;

use crate::tables;

const BLOB: &[u8] = include_bytes!(concat!(env!("IFEVAL_DATA"), "/langdetect.bin"));
/// Hash table over the n-grams, built by build.rs.
const HASH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ld_hash.bin"));

include!("fnv.rs");

const N_TRIAL: usize = 7;
const ALPHA: f64 = 0.5;
const ALPHA_WIDTH: f64 = 0.05;
const ITERATION_LIMIT: usize = 1000;
const PROB_THRESHOLD: f64 = 0.1;
const CONV_THRESHOLD: f64 = 0.99999;
const BASE_FREQ: f64 = 10000.0;
const MAX_TEXT_LENGTH: usize = 10000;

pub struct Profiles {
    pub langs: Vec<String>,
    /// Per language, its total of 1-, 2- and 3-grams.
    n_words: Vec<[f64; 3]>,
    key_off: usize,
    entry_off: usize,
    keys: &'static [u8],
    entries: &'static [u8],
}

pub static PROFILES: LazyLock<Profiles> = LazyLock::new(Profiles::load);

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

impl Profiles {
    /// Reads only the header: the tables are used in place.
    fn load() -> Profiles {
        let b = BLOB;
        assert_eq!(&b[..4], b"LDP2", "langdetect.bin: bad magic");
        let mut at = 4;
        let nlangs = u32_at(b, at) as usize;
        at += 4;
        let mut langs = Vec::with_capacity(nlangs);
        let mut n_words = Vec::with_capacity(nlangs);
        for _ in 0..nlangs {
            let n = b[at] as usize;
            langs.push(String::from_utf8(b[at + 1..at + 1 + n].to_vec()).unwrap());
            at += 1 + n;
            let w = |k: usize| {
                u64::from_le_bytes(b[at + 8 * k..at + 8 * k + 8].try_into().unwrap()) as f64
            };
            n_words.push([w(0), w(1), w(2)]);
            at += 24;
        }
        let nkeys = u32_at(b, at) as usize;
        at += 4;
        let key_off = at;
        let entry_off = key_off + 4 * (nkeys + 1);
        at = entry_off + 4 * (nkeys + 1);
        let key_len = u32_at(b, at) as usize;
        at += 4;
        Profiles {
            langs,
            n_words,
            key_off,
            entry_off,
            keys: &b[at..at + key_len],
            entries: &b[at + key_len..],
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        let a = u32_at(BLOB, self.key_off + 4 * i) as usize;
        let b = u32_at(BLOB, self.key_off + 4 * (i + 1)) as usize;
        &self.keys[a..b]
    }

    fn find(&self, g: &[u8]) -> Option<usize> {
        let size = HASH.len() / 4;
        let mut s = fnv1a(g) as usize & (size - 1);
        loop {
            match u32_at(HASH, 4 * s) as usize {
                0 => return None,
                v if self.key(v - 1) == g => return Some(v - 1),
                _ => s = (s + 1) & (size - 1),
            }
        }
    }

    /// The dense probability row of n-gram `i` (`freq / n_words` as the factory computes it).
    fn row(&self, i: usize) -> Vec<f64> {
        let mut p = vec![0.0; self.langs.len()];
        let len = self.key(i).len();
        let n = std::str::from_utf8(self.key(i)).map_or(len, |s| s.chars().count());
        let a = u32_at(BLOB, self.entry_off + 4 * i) as usize;
        let b = u32_at(BLOB, self.entry_off + 4 * (i + 1)) as usize;
        for e in a..b {
            let at = 5 * e;
            let lang = self.entries[at] as usize;
            let freq = u32_at(self.entries, at + 1) as f64;
            p[lang] = freq / self.n_words[lang][n - 1];
        }
        p
    }

    fn normalize(&self, c: char) -> char {
        let cp = c as u32;
        match cp {
            0..=0x7F => {
                if c.is_ascii_alphabetic() {
                    c
                } else {
                    ' '
                }
            }
            0x80..=0xFF => {
                if tables::LD_LATIN1_EXCLUDED.contains(&c) {
                    ' '
                } else {
                    c
                }
            }
            0x180..=0x24F => match c {
                '\u{219}' => '\u{15f}',
                '\u{21b}' => '\u{163}',
                _ => c,
            },
            0x2000..=0x206F => ' ',
            0x600..=0x6FF => {
                if c == '\u{6cc}' {
                    '\u{64a}'
                } else {
                    c
                }
            }
            0x1E00..=0x1EFF => {
                if cp >= 0x1EA0 {
                    '\u{1ec3}'
                } else {
                    c
                }
            }
            0x3040..=0x309F => '\u{3042}',
            0x30A0..=0x30FF => '\u{30a2}',
            0x3100..=0x312F | 0x31A0..=0x31BF => '\u{3105}',
            0x4E00..=0x9FFF => tables::LD_CJK
                .binary_search_by_key(&c, |&(k, _)| k)
                .map_or(c, |i| tables::LD_CJK[i].1),
            0xAC00..=0xD7AF => '\u{ac00}',
            _ => c,
        }
    }

    fn normalize_vi(&self, text: &str) -> Vec<char> {
        let c: Vec<char> = text.chars().collect();
        let mut out = Vec::with_capacity(c.len());
        let mut i = 0;
        while i < c.len() {
            if i + 1 < c.len()
                && ('\u{300}'..='\u{323}').contains(&c[i + 1])
                && let Some(d) = tables::LD_VI_MARKS.iter().position(|&x| x == c[i + 1])
                && let Some(a) = tables::LD_VI_CHARS.iter().position(|&x| x == c[i])
                && let Some(&n) = tables::LD_VI_NORMALIZED.get(d).and_then(|s| s.get(a))
            {
                out.push(n);
                i += 2;
                continue;
            }
            out.push(c[i]);
            i += 1;
        }
        out
    }
}

/// `random.seed(0)`'s state, computed once.
static SEEDED: LazyLock<PyRandom> = LazyLock::new(|| PyRandom::seeded(0));

static URL_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"https?://[-_.?&~;+=/#0-9A-Za-z]{1,2076}").unwrap());
static MAIL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[-_.0-9A-Za-z]{1,64}@[-_0-9A-Za-z]{1,255}[-_.0-9A-Za-z]{1,255}").unwrap()
});

/// CPython's `random.Random` (MT19937), as much of it as the detector uses.
#[derive(Clone)]
struct PyRandom {
    mt: [u32; 624],
    idx: usize,
    gauss_next: Option<f64>,
}

impl PyRandom {
    /// `random.seed(n)` for a non-negative n < 2**32.
    fn seeded(n: u32) -> PyRandom {
        let mut r = PyRandom {
            mt: [0; 624],
            idx: 624,
            gauss_next: None,
        };
        r.mt[0] = 19650218;
        for i in 1..624 {
            let p = r.mt[i - 1];
            r.mt[i] = 1812433253u32
                .wrapping_mul(p ^ (p >> 30))
                .wrapping_add(i as u32);
        }
        let key = [n];
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..624usize.max(key.len()) {
            let p = r.mt[i - 1];
            r.mt[i] = (r.mt[i] ^ (p ^ (p >> 30)).wrapping_mul(1664525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..623 {
            let p = r.mt[i - 1];
            r.mt[i] = (r.mt[i] ^ (p ^ (p >> 30)).wrapping_mul(1566083941)).wrapping_sub(i as u32);
            i += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
        }
        r.mt[0] = 0x8000_0000;
        r
    }

    fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                self.mt[k] =
                    self.mt[(k + 397) % 624] ^ (y >> 1) ^ if y & 1 != 0 { 0x9908_b0df } else { 0 };
            }
            self.idx = 0;
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)
    }

    fn gauss(&mut self) -> f64 {
        if let Some(z) = self.gauss_next.take() {
            return z;
        }
        let x2pi = self.random() * std::f64::consts::TAU;
        let g2rad = (-2.0 * (1.0 - self.random()).ln()).sqrt();
        self.gauss_next = Some(x2pi.sin() * g2rad);
        x2pi.cos() * g2rad
    }

    /// `_randbelow(n)` through `getrandbits`.
    fn below(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = (self.next_u32() >> (32 - k)) as usize;
            if r < n {
                return r;
            }
        }
    }
}

/// `langdetect.detect(text)`; `None` where it raises (no features in the text).
pub fn detect(text: &str) -> Option<String> {
    let p = &*PROFILES;
    let text = if text.contains("http") {
        URL_RE.replace_all(text, " ")
    } else {
        text.into()
    };
    let text = if text.contains('@') {
        MAIL_RE.replace_all(&text, " ")
    } else {
        text
    };
    let raw = p.normalize_vi(&text);
    // append(): at most 10000 characters, runs of spaces collapsed.
    let mut chars = Vec::with_capacity(raw.len().min(MAX_TEXT_LENGTH));
    let mut pre = '\0';
    for &c in raw.iter().take(MAX_TEXT_LENGTH) {
        if c != ' ' || pre != ' ' {
            chars.push(c);
        }
        pre = c;
    }
    // cleaning_text(): drop Latin letters from text that is mostly non-Latin.
    let latin = chars.iter().filter(|&&c| ('A'..='z').contains(&c)).count();
    let non_latin = chars
        .iter()
        .filter(|&&c| c >= '\u{300}' && !('\u{1E00}'..='\u{1EFF}').contains(&c))
        .count();
    if latin * 2 < non_latin {
        chars.retain(|&c| !('A'..='z').contains(&c));
    }
    // n-grams (1..3) with NGram's buffer rules; all-caps words are skipped.
    let mut grams: Vec<char> = vec![' '];
    let mut capital = false;
    let mut found: Vec<usize> = Vec::new();
    for &c in &chars {
        let c = p.normalize(c);
        let last = *grams.last().unwrap();
        if last == ' ' {
            grams = vec![' '];
            capital = false;
            if c == ' ' {
                continue;
            }
        } else if grams.len() >= 3 {
            grams.remove(0);
        }
        grams.push(c);
        if c.is_uppercase() {
            if last.is_uppercase() {
                capital = true;
            }
        } else {
            capital = false;
        }
        if capital {
            continue;
        }
        for n in 1..=3 {
            if grams.len() < n {
                break;
            }
            let gram = &grams[grams.len() - n..];
            if gram == [' '] {
                continue;
            }
            let mut buf = [0u8; 12];
            let mut len = 0;
            for ch in gram {
                len += ch.encode_utf8(&mut buf[len..]).len();
            }
            if let Some(i) = p.find(&buf[..len]) {
                found.push(i);
            }
        }
    }
    if found.is_empty() {
        return None;
    }
    // Dense rows of the distinct n-grams, indexed locally.
    let mut distinct = found.clone();
    distinct.sort_unstable();
    distinct.dedup();
    // Rows are built when an n-gram is first drawn: most are never drawn.
    let mut rows: Vec<Option<Vec<f64>>> = vec![None; distinct.len()];
    let local: Vec<usize> = found
        .iter()
        .map(|g| distinct.binary_search(g).expect("present"))
        .collect();
    let nl = p.langs.len();
    let mut langprob = vec![0.0; nl];
    let mut rng = SEEDED.clone();
    for _ in 0..N_TRIAL {
        let mut prob = vec![1.0 / nl as f64; nl];
        let alpha = ALPHA + rng.gauss() * ALPHA_WIDTH;
        let weight = alpha / BASE_FREQ;
        let mut i = 0;
        loop {
            let l = local[rng.below(local.len())];
            let row = rows[l].get_or_insert_with(|| p.row(distinct[l]));
            for (q, r) in prob.iter_mut().zip(row.iter()) {
                *q *= weight + r;
            }
            if i % 5 == 0 {
                let sum: f64 = prob.iter().fold(0.0, |a, b| a + b);
                let mut maxp = 0.0;
                for q in prob.iter_mut() {
                    *q /= sum;
                    if maxp < *q {
                        maxp = *q;
                    }
                }
                if maxp > CONV_THRESHOLD || i >= ITERATION_LIMIT {
                    break;
                }
            }
            i += 1;
        }
        for (l, q) in langprob.iter_mut().zip(&prob) {
            *l += q / N_TRIAL as f64;
        }
    }
    let mut best: Option<(usize, f64)> = None;
    for (i, &q) in langprob.iter().enumerate() {
        if q > PROB_THRESHOLD && best.is_none_or(|(_, b)| q > b) {
            best = Some((i, q));
        }
    }
    Some(
        best.map(|(i, _)| p.langs[i].clone())
            .unwrap_or_else(|| "unknown".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_random_stream() {
        // random.seed(0); [random.random() for _ in range(2)], random.gauss(0, 1)
        let mut r = PyRandom::seeded(0);
        assert_eq!(r.random(), 0.8444218515250481);
        assert_eq!(r.random(), 0.7579544029403025);
        let mut r = PyRandom::seeded(0);
        assert!((r.gauss() - 0.9417154046806644).abs() < 1e-15);
    }

    #[test]
    fn detects_common_languages() {
        assert_eq!(detect("bonjour tout le monde").as_deref(), Some("fr"));
        assert_eq!(
            detect("This is plainly an English sentence.").as_deref(),
            Some("en")
        );
        assert_eq!(detect("12345 !!!"), None);
    }
}
