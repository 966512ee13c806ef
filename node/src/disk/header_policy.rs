//! The allow-list a LUKS2 header must pass before the state disk is unlocked.
//!
//! LUKS2 metadata is not authenticated: whoever controls the disk (the host, in every
//! confidential-VM variant) can rewrite it. A keyslot whose area cipher is `cipher_null` opens
//! with any passphrase (libcryptsetup before 2.8.1, and the image ships 2.6.1); a data segment
//! without integrity, with `cipher_null` or with another mode keeps opening with the genuine
//! keyslot while the data is no longer protected. So the header is checked against exactly what
//! [`super::LuksStateDisk`] creates, and anything else is refused whatever the passphrase:
//!
//! - `config`: JSON area 12 KiB, keyslots area 16 MiB − 32 KiB, no requirements, no persistent
//!   flags other than the work-queue bypasses;
//! - one segment `0`: `crypt`, `aes-xts-plain64`, 4096-byte sectors, integrity `hmac(sha256)`
//!   (journal encryption/integrity `none`), offset 16 MiB, size `dynamic`, IV tweak 0;
//! - one keyslot: `luks2`, 96-byte volume key (512-bit XTS + 256-bit HMAC), area `raw` with
//!   `aes-xts-plain64` and a 64-byte key, inside the keyslots area; AF `luks1` with 4000 stripes
//!   and sha256; KDF argon2id within [`ARGON2_MEMORY_KIB`], [`ARGON2_TIME`], [`ARGON2_CPUS`];
//! - one digest: `pbkdf2`/sha256 binding that keyslot to segment `0`, iterations bounded;
//! - tokens: only this agent's two token types, each at most once, bound to no keyslot.
//!
//! The check is a pure function of the header JSON (as libcryptsetup loaded it) and never
//! panics on arbitrary input; it reports every field that breaks the policy.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::RangeInclusive;

use serde_json::Value;

/// Segment and keyslot cipher.
pub const CIPHER: &str = "aes-xts-plain64";
/// Data integrity of the segment.
pub const INTEGRITY: &str = "hmac(sha256)";
/// Encryption sector size.
pub const SECTOR_SIZE: u64 = 4096;
/// Volume key: 64 bytes AES-XTS (two 256-bit keys) + 32 bytes HMAC-SHA256.
pub const VOLUME_KEY_BYTES: u64 = 96;
/// Keyslot area key: AES-XTS with two 256-bit keys.
pub const AREA_KEY_BYTES: u64 = 64;
/// JSON area of each of the two metadata copies (16 KiB metadata − 4 KiB binary header).
pub const JSON_SIZE: u64 = 12 * 1024;
/// Size of one metadata copy (binary header + JSON area).
pub const METADATA_SIZE: u64 = 16 * 1024;
/// Keyslots area: from the end of the two metadata copies to the data segment.
pub const KEYSLOTS_SIZE: u64 = DATA_OFFSET - 2 * METADATA_SIZE;
/// Start of the data segment: the LUKS2 header (metadata + keyslots) is exactly this long.
pub const DATA_OFFSET: u64 = 16 * 1024 * 1024;
/// Anti-forensic splitter stripes (LUKS standard).
pub const AF_STRIPES: u64 = 4000;
/// argon2id memory cost bounds, KiB. The keys are 256-bit random values, so the cost only
/// bounds what an unlock may take: no more than a small node can give.
pub const ARGON2_MEMORY_KIB: RangeInclusive<u64> = 8 * 1024..=1024 * 1024;
/// argon2id passes (libcryptsetup's minimum is 4).
pub const ARGON2_TIME: RangeInclusive<u64> = 4..=32;
/// argon2id lanes.
pub const ARGON2_CPUS: RangeInclusive<u64> = 1..=4;
/// PBKDF2 iterations of the volume-key digest (libcryptsetup's minimum is 1000).
pub const DIGEST_ITERATIONS: RangeInclusive<u64> = 1000..=10_000_000;
/// Persistent activation flags a header may carry (performance only).
pub const ALLOWED_CONFIG_FLAGS: [&str; 2] = ["no-read-workqueue", "no-write-workqueue"];

/// One field that breaks the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON path of the field, e.g. `keyslots.1.area.encryption`.
    pub field: String,
    /// What the header has and what the policy requires.
    pub problem: String,
}

/// Every field of a LUKS2 header that breaks the policy (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPolicyError {
    /// The violations, in the order checked.
    pub violations: Vec<Violation>,
}

impl fmt::Display for HeaderPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for HeaderPolicyError {}

/// What the policy found in a conforming header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedHeader {
    /// The one keyslot's id.
    pub keyslot: u32,
}

/// The token types a header may carry: this agent's initialisation and endpoint tokens.
pub fn allowed_token_types() -> [&'static str; 2] {
    [super::TOKEN_TYPE, super::ENDPOINTS_TOKEN_TYPE]
}

/// Parses `bytes` as LUKS2 header JSON and checks it (see the module documentation).
pub fn check_header_json(bytes: &[u8]) -> Result<CheckedHeader, HeaderPolicyError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => check_header(&v),
        Err(e) => Err(HeaderPolicyError {
            violations: vec![Violation {
                field: "header".into(),
                problem: format!("the metadata is not JSON ({e})"),
            }],
        }),
    }
}

/// Checks LUKS2 header JSON (see the module documentation).
pub fn check_header(meta: &Value) -> Result<CheckedHeader, HeaderPolicyError> {
    let mut c = Checker::default();
    c.config(meta.get("config"));
    c.segments(meta.get("segments"));
    let keyslot = c.keyslots(meta.get("keyslots"));
    c.digests(meta.get("digests"), keyslot.as_deref());
    c.tokens(meta.get("tokens"));
    if let Some(obj) = meta.as_object() {
        for key in obj.keys() {
            if !["config", "segments", "keyslots", "digests", "tokens"].contains(&key.as_str()) {
                c.bad(key, "unknown top-level section".to_string());
            }
        }
    } else {
        c.bad("header", "the metadata is not a JSON object".to_string());
    }
    match (
        c.violations.is_empty(),
        keyslot.and_then(|k| k.parse().ok()),
    ) {
        (true, Some(keyslot)) => Ok(CheckedHeader { keyslot }),
        _ => {
            if c.violations.is_empty() {
                c.bad("keyslots", "no usable keyslot id".to_string());
            }
            Err(HeaderPolicyError {
                violations: c.violations,
            })
        }
    }
}

#[derive(Default)]
struct Checker {
    violations: Vec<Violation>,
}

/// A short, bounded rendering of an untrusted value for error messages.
fn show(v: Option<&Value>) -> String {
    match v {
        None => "missing".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 64 {
                format!("{}…", s.chars().take(64).collect::<String>())
            } else {
                s
            }
        }
    }
}

/// A LUKS2 64-bit number: a string of decimal digits.
fn u64_string(v: Option<&Value>) -> Option<u64> {
    let s = v?.as_str()?;
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Checker {
    fn bad(&mut self, field: &str, problem: String) {
        self.violations.push(Violation {
            field: field.to_string(),
            problem,
        });
    }

    fn object<'a>(
        &mut self,
        field: &str,
        v: Option<&'a Value>,
    ) -> Option<&'a serde_json::Map<String, Value>> {
        let o = v.and_then(Value::as_object);
        if o.is_none() {
            self.bad(field, format!("is {}, policy requires an object", show(v)));
        }
        o
    }

    fn str_eq(&mut self, field: &str, v: Option<&Value>, want: &str) {
        if v.and_then(Value::as_str) != Some(want) {
            self.bad(field, format!("is {}, policy requires {want:?}", show(v)));
        }
    }

    fn int_eq(&mut self, field: &str, v: Option<&Value>, want: u64) {
        if v.and_then(Value::as_u64) != Some(want) {
            self.bad(field, format!("is {}, policy requires {want}", show(v)));
        }
    }

    fn int_in(&mut self, field: &str, v: Option<&Value>, range: &RangeInclusive<u64>) {
        if !v
            .and_then(Value::as_u64)
            .is_some_and(|n| range.contains(&n))
        {
            self.bad(
                field,
                format!(
                    "is {}, policy requires {}..={}",
                    show(v),
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    fn num_str_eq(&mut self, field: &str, v: Option<&Value>, want: u64) {
        if u64_string(v) != Some(want) {
            self.bad(field, format!("is {}, policy requires \"{want}\"", show(v)));
        }
    }

    /// A list of decimal id strings, exactly `want`.
    fn ids_eq(&mut self, field: &str, v: Option<&Value>, want: &[&str]) {
        let ok = v.and_then(Value::as_array).is_some_and(|a| {
            a.len() == want.len() && a.iter().zip(want).all(|(x, w)| x.as_str() == Some(*w))
        });
        if !ok {
            self.bad(field, format!("is {}, policy requires {want:?}", show(v)));
        }
    }

    /// Fields other than `allowed` in `obj` are refused: unknown fields may change behaviour.
    fn only(&mut self, field: &str, obj: &serde_json::Map<String, Value>, allowed: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.bad(&format!("{field}.{key}"), "field not allowed".into());
            }
        }
    }

    fn config(&mut self, v: Option<&Value>) {
        let Some(cfg) = self.object("config", v) else {
            return;
        };
        self.num_str_eq("config.json_size", cfg.get("json_size"), JSON_SIZE);
        self.num_str_eq(
            "config.keyslots_size",
            cfg.get("keyslots_size"),
            KEYSLOTS_SIZE,
        );
        if let Some(flags) = cfg.get("flags") {
            let ok = flags.as_array().is_some_and(|a| {
                a.iter().all(|f| {
                    f.as_str()
                        .is_some_and(|s| ALLOWED_CONFIG_FLAGS.contains(&s))
                })
            });
            if !ok {
                self.bad(
                    "config.flags",
                    format!(
                        "is {}, policy allows only {ALLOWED_CONFIG_FLAGS:?}",
                        show(Some(flags))
                    ),
                );
            }
        }
        // Requirements (e.g. an online re-encryption in progress) change how segments are read.
        if let Some(req) = cfg.get("requirements") {
            let empty = req.as_object().is_some_and(|r| {
                r.iter()
                    .all(|(_, v)| v.as_array().is_some_and(|a| a.is_empty()))
            });
            if !empty {
                self.bad(
                    "config.requirements",
                    format!("is {}, policy requires none", show(Some(req))),
                );
            }
        }
        self.only(
            "config",
            cfg,
            &["json_size", "keyslots_size", "flags", "requirements"],
        );
    }

    fn segments(&mut self, v: Option<&Value>) {
        let Some(segs) = self.object("segments", v) else {
            return;
        };
        if segs.len() != 1 || !segs.contains_key("0") {
            let ids: Vec<&String> = segs.keys().take(8).collect();
            self.bad(
                "segments",
                format!("has segments {ids:?}, policy requires exactly segment \"0\""),
            );
        }
        for (id, seg) in segs.iter().take(8) {
            let f = |name: &str| format!("segments.{id}.{name}");
            let Some(s) = self.object(&format!("segments.{id}"), Some(seg)) else {
                continue;
            };
            self.str_eq(&f("type"), s.get("type"), "crypt");
            self.num_str_eq(&f("offset"), s.get("offset"), DATA_OFFSET);
            self.str_eq(&f("size"), s.get("size"), "dynamic");
            self.num_str_eq(&f("iv_tweak"), s.get("iv_tweak"), 0);
            self.str_eq(&f("encryption"), s.get("encryption"), CIPHER);
            self.int_eq(&f("sector_size"), s.get("sector_size"), SECTOR_SIZE);
            match s.get("integrity") {
                None => self.bad(
                    &f("integrity"),
                    format!("is missing: the data would not be authenticated; policy requires {INTEGRITY:?}"),
                ),
                Some(i) => {
                    if let Some(io) = self.object(&f("integrity"), Some(i)) {
                        self.str_eq(&f("integrity.type"), io.get("type"), INTEGRITY);
                        self.str_eq(
                            &f("integrity.journal_encryption"),
                            io.get("journal_encryption"),
                            "none",
                        );
                        self.str_eq(
                            &f("integrity.journal_integrity"),
                            io.get("journal_integrity"),
                            "none",
                        );
                        self.only(
                            &f("integrity"),
                            io,
                            &["type", "journal_encryption", "journal_integrity", "key_size"],
                        );
                    }
                }
            }
            if let Some(flags) = s.get("flags")
                && !flags.as_array().is_some_and(|a| a.is_empty())
            {
                self.bad(
                    &f("flags"),
                    format!("is {}, policy requires none", show(Some(flags))),
                );
            }
            self.only(
                &format!("segments.{id}"),
                s,
                &[
                    "type",
                    "offset",
                    "size",
                    "iv_tweak",
                    "encryption",
                    "sector_size",
                    "integrity",
                    "flags",
                ],
            );
        }
    }

    /// Returns the id of the one keyslot, if there is exactly one.
    fn keyslots(&mut self, v: Option<&Value>) -> Option<String> {
        let slots = self.object("keyslots", v)?;
        if slots.len() != 1 {
            let ids: Vec<&String> = slots.keys().take(8).collect();
            self.bad(
                "keyslots",
                format!("has keyslots {ids:?}, policy requires exactly one"),
            );
        }
        for (id, slot) in slots.iter().take(8) {
            let f = |name: &str| format!("keyslots.{id}.{name}");
            if !id
                .parse::<u32>()
                .is_ok_and(|n| n < 32 && n.to_string() == *id)
            {
                self.bad(
                    &format!("keyslots.{id}"),
                    "is not a keyslot id 0..31".into(),
                );
            }
            let Some(s) = self.object(&format!("keyslots.{id}"), Some(slot)) else {
                continue;
            };
            self.str_eq(&f("type"), s.get("type"), "luks2");
            self.int_eq(&f("key_size"), s.get("key_size"), VOLUME_KEY_BYTES);
            if let Some(p) = s.get("priority") {
                // 1 is "normal"; 0 ("ignore") or 2 ("prefer") are never written by this agent.
                self.int_eq(&f("priority"), Some(p), 1);
            }
            if let Some(af) = self.object(&f("af"), s.get("af")) {
                self.str_eq(&f("af.type"), af.get("type"), "luks1");
                self.int_eq(&f("af.stripes"), af.get("stripes"), AF_STRIPES);
                self.str_eq(&f("af.hash"), af.get("hash"), "sha256");
                self.only(&f("af"), af, &["type", "stripes", "hash"]);
            }
            if let Some(area) = self.object(&f("area"), s.get("area")) {
                self.str_eq(&f("area.type"), area.get("type"), "raw");
                self.str_eq(&f("area.encryption"), area.get("encryption"), CIPHER);
                self.int_eq(&f("area.key_size"), area.get("key_size"), AREA_KEY_BYTES);
                let offset = u64_string(area.get("offset"));
                let size = u64_string(area.get("size"));
                let region = 2 * METADATA_SIZE..=DATA_OFFSET;
                let need = VOLUME_KEY_BYTES * AF_STRIPES;
                match (offset, size) {
                    (Some(o), Some(sz))
                        if o % 4096 == 0
                            && region.contains(&o)
                            && sz >= need
                            && o.checked_add(sz).is_some_and(|end| end <= DATA_OFFSET) => {}
                    _ => self.bad(
                        &f("area"),
                        format!(
                            "offset {} size {} is not a 4096-aligned area of at least {need} bytes \
                             inside the keyslots area {}..{DATA_OFFSET}",
                            show(area.get("offset")),
                            show(area.get("size")),
                            2 * METADATA_SIZE
                        ),
                    ),
                }
                self.only(
                    &f("area"),
                    area,
                    &["type", "offset", "size", "encryption", "key_size"],
                );
            }
            if let Some(kdf) = self.object(&f("kdf"), s.get("kdf")) {
                self.str_eq(&f("kdf.type"), kdf.get("type"), "argon2id");
                self.int_in(&f("kdf.time"), kdf.get("time"), &ARGON2_TIME);
                self.int_in(&f("kdf.memory"), kdf.get("memory"), &ARGON2_MEMORY_KIB);
                self.int_in(&f("kdf.cpus"), kdf.get("cpus"), &ARGON2_CPUS);
                if kdf
                    .get("salt")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    self.bad(
                        &f("kdf.salt"),
                        format!("is {}, policy requires a salt", show(kdf.get("salt"))),
                    );
                }
                self.only(&f("kdf"), kdf, &["type", "time", "memory", "cpus", "salt"]);
            }
            self.only(
                &format!("keyslots.{id}"),
                s,
                &["type", "key_size", "priority", "af", "area", "kdf"],
            );
        }
        (slots.len() == 1)
            .then(|| slots.keys().next().cloned())
            .flatten()
    }

    fn digests(&mut self, v: Option<&Value>, keyslot: Option<&str>) {
        let Some(digests) = self.object("digests", v) else {
            return;
        };
        if digests.len() != 1 {
            let ids: Vec<&String> = digests.keys().take(8).collect();
            self.bad(
                "digests",
                format!("has digests {ids:?}, policy requires exactly one"),
            );
        }
        for (id, d) in digests.iter().take(8) {
            let f = |name: &str| format!("digests.{id}.{name}");
            let Some(d) = self.object(&format!("digests.{id}"), Some(d)) else {
                continue;
            };
            self.str_eq(&f("type"), d.get("type"), "pbkdf2");
            self.str_eq(&f("hash"), d.get("hash"), "sha256");
            self.int_in(&f("iterations"), d.get("iterations"), &DIGEST_ITERATIONS);
            if let Some(k) = keyslot {
                self.ids_eq(&f("keyslots"), d.get("keyslots"), &[k]);
            }
            self.ids_eq(&f("segments"), d.get("segments"), &["0"]);
            for name in ["salt", "digest"] {
                if d.get(name)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    self.bad(
                        &f(name),
                        format!("is {}, policy requires a value", show(d.get(name))),
                    );
                }
            }
            self.only(
                &format!("digests.{id}"),
                d,
                &[
                    "type",
                    "keyslots",
                    "segments",
                    "hash",
                    "iterations",
                    "salt",
                    "digest",
                ],
            );
        }
    }

    fn tokens(&mut self, v: Option<&Value>) {
        let Some(tokens) = self.object("tokens", v) else {
            return;
        };
        let mut seen = BTreeSet::new();
        for (id, t) in tokens.iter().take(32) {
            let f = |name: &str| format!("tokens.{id}.{name}");
            let ty = t.get("type").and_then(Value::as_str);
            match ty {
                Some(ty) if allowed_token_types().contains(&ty) => {
                    if !seen.insert(ty.to_string()) {
                        self.bad(&f("type"), format!("{ty:?} appears twice"));
                    }
                }
                _ => self.bad(
                    &f("type"),
                    format!(
                        "is {}, policy allows only {:?}",
                        show(t.get("type")),
                        allowed_token_types()
                    ),
                ),
            }
            if !t
                .get("keyslots")
                .and_then(Value::as_array)
                .is_some_and(|a| a.is_empty())
            {
                self.bad(
                    &f("keyslots"),
                    format!("is {}, policy requires []", show(t.get("keyslots"))),
                );
            }
        }
        if tokens.len() > 32 {
            self.bad("tokens", "more than 32 tokens".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header `LuksStateDisk` writes (as libcryptsetup 2.6.1 dumps it), after re-keying.
    pub(crate) fn genuine() -> Value {
        serde_json::json!({
            "keyslots": {"1": {
                "type": "luks2", "key_size": 96,
                "af": {"type": "luks1", "stripes": 4000, "hash": "sha256"},
                "area": {"type": "raw", "offset": "421888", "size": "385024",
                         "encryption": "aes-xts-plain64", "key_size": 64},
                "kdf": {"type": "argon2id", "time": 4, "memory": 65536, "cpus": 1,
                        "salt": "pv28Sh6zCoo6V+erMby5iVkSGPAU8O0uZrypRS4+ZYA="}
            }},
            "tokens": {
                "0": {"type": super::super::TOKEN_TYPE, "keyslots": [], "diskIsInitialized": true},
                "1": {"type": super::super::ENDPOINTS_TOKEN_TYPE, "keyslots": [],
                      "endpoints": ["10.0.0.2:30090"]}
            },
            "segments": {"0": {
                "type": "crypt", "offset": "16777216", "size": "dynamic", "iv_tweak": "0",
                "encryption": "aes-xts-plain64", "sector_size": 4096,
                "integrity": {"type": "hmac(sha256)", "journal_encryption": "none",
                              "journal_integrity": "none"}
            }},
            "digests": {"0": {
                "type": "pbkdf2", "keyslots": ["1"], "segments": ["0"], "hash": "sha256",
                "iterations": 1000, "salt": "V68gfvbNjw6M7nk3KX3yZ3iMn1+7TKV6c+DuiVn2E9o=",
                "digest": "RtV8f4lTdfiuYfAJo7PSNJs5U63URp4wmVQOIKV0nZM="
            }},
            "config": {"json_size": "12288", "keyslots_size": "16744448"}
        })
    }

    fn fields(meta: &Value) -> Vec<String> {
        match check_header(meta) {
            Ok(_) => Vec::new(),
            Err(e) => e.violations.into_iter().map(|v| v.field).collect(),
        }
    }

    fn with(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut m = genuine();
        edit(&mut m);
        fields(&m)
    }

    #[test]
    fn genuine_header_passes() {
        assert_eq!(check_header(&genuine()), Ok(CheckedHeader { keyslot: 1 }));
        let bytes = serde_json::to_vec(&genuine()).unwrap();
        assert!(check_header_json(&bytes).is_ok());
    }

    #[test]
    fn each_alteration_names_its_field() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let table: Vec<(&str, Edit)> = vec![
            (
                "keyslots.1.area.encryption",
                Box::new(|m| m["keyslots"]["1"]["area"]["encryption"] = "cipher_null-ecb".into()),
            ),
            (
                "segments.0.integrity",
                Box::new(|m| {
                    m["segments"]["0"]
                        .as_object_mut()
                        .unwrap()
                        .remove("integrity");
                }),
            ),
            (
                "segments.0.encryption",
                Box::new(|m| m["segments"]["0"]["encryption"] = "cipher_null-ecb".into()),
            ),
            (
                "segments.0.integrity.type",
                Box::new(|m| m["segments"]["0"]["integrity"]["type"] = "crc32c".into()),
            ),
            (
                "segments.0.sector_size",
                Box::new(|m| m["segments"]["0"]["sector_size"] = 512.into()),
            ),
            (
                "segments.0.offset",
                Box::new(|m| m["segments"]["0"]["offset"] = "4096".into()),
            ),
            (
                "segments.0.encryption",
                Box::new(|m| m["segments"]["0"]["encryption"] = "aes-cbc-essiv:sha256".into()),
            ),
            (
                "keyslots.1.key_size",
                Box::new(|m| m["keyslots"]["1"]["key_size"] = 64.into()),
            ),
            (
                "keyslots.1.kdf.type",
                Box::new(|m| m["keyslots"]["1"]["kdf"]["type"] = "pbkdf2".into()),
            ),
            (
                "keyslots.1.kdf.memory",
                Box::new(|m| m["keyslots"]["1"]["kdf"]["memory"] = (4u64 * 1024 * 1024).into()),
            ),
            (
                "keyslots.1.kdf.time",
                Box::new(|m| m["keyslots"]["1"]["kdf"]["time"] = 100_000.into()),
            ),
            (
                "keyslots.1.kdf.cpus",
                Box::new(|m| m["keyslots"]["1"]["kdf"]["cpus"] = 64.into()),
            ),
            (
                "keyslots.1.area",
                Box::new(|m| m["keyslots"]["1"]["area"]["offset"] = "16777216".into()),
            ),
            (
                "keyslots.1.area",
                Box::new(|m| m["keyslots"]["1"]["area"]["size"] = "18446744073709551615".into()),
            ),
            (
                "keyslots.1.af.stripes",
                Box::new(|m| m["keyslots"]["1"]["af"]["stripes"] = 1.into()),
            ),
            (
                "keyslots",
                Box::new(|m| {
                    let s = m["keyslots"]["1"].clone();
                    m["keyslots"]["2"] = s;
                }),
            ),
            (
                "segments",
                Box::new(|m| {
                    let s = m["segments"]["0"].clone();
                    m["segments"]["1"] = s;
                }),
            ),
            (
                "digests",
                Box::new(|m| {
                    let d = m["digests"]["0"].clone();
                    m["digests"]["1"] = d;
                }),
            ),
            (
                "digests.0.keyslots",
                Box::new(|m| m["digests"]["0"]["keyslots"] = serde_json::json!(["0"])),
            ),
            (
                "tokens.2.type",
                Box::new(|m| {
                    m["tokens"]["2"] = serde_json::json!({"type": "systemd-tpm2", "keyslots": []})
                }),
            ),
            (
                "tokens.2.keyslots",
                Box::new(|m| {
                    m["tokens"]["2"] =
                        serde_json::json!({"type": "luks2-keyring", "keyslots": ["1"]})
                }),
            ),
            (
                "config.requirements",
                Box::new(|m| {
                    m["config"]["requirements"] =
                        serde_json::json!({"mandatory": ["online-reencrypt-v2"]})
                }),
            ),
            (
                "config.flags",
                Box::new(|m| m["config"]["flags"] = serde_json::json!(["allow-discards"])),
            ),
            (
                "config.keyslots_size",
                Box::new(|m| m["config"]["keyslots_size"] = "0x10".into()),
            ),
        ];
        for (want, edit) in table {
            let got = with(edit);
            assert!(got.iter().any(|f| f == want), "want {want}, got {got:?}");
        }
    }

    #[test]
    fn allowed_variations_pass() {
        assert!(
            with(|m| m["config"]["flags"] = serde_json::json!(["no-read-workqueue"])).is_empty()
        );
        assert!(
            with(|m| {
                m["tokens"].as_object_mut().unwrap().clear();
            })
            .is_empty()
        );
        assert!(with(|m| m["keyslots"]["1"]["kdf"]["memory"] = 32768.into()).is_empty());
    }

    #[test]
    fn error_message_names_every_field() {
        let mut m = genuine();
        m["keyslots"]["1"]["area"]["encryption"] = "cipher_null-ecb".into();
        m["segments"]["0"]["sector_size"] = 512.into();
        let e = check_header(&m).unwrap_err().to_string();
        assert!(
            e.contains("keyslots.1.area.encryption: is \"cipher_null-ecb\""),
            "{e}"
        );
        assert!(
            e.contains("segments.0.sector_size: is 512, policy requires 4096"),
            "{e}"
        );
    }

    /// Random structural mutations of the genuine header (a cheap stand-in for the fuzz target
    /// in the unit tests): never a panic, and only the unmodified header passes.
    #[test]
    fn random_mutations_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x1u64 << 40);
        let replacements = [
            Value::Null,
            Value::Bool(true),
            serde_json::json!(-1),
            serde_json::json!(u64::MAX),
            serde_json::json!(1.5),
            serde_json::json!("18446744073709551616"),
            serde_json::json!(""),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!(["0", "1", 7]),
        ];
        fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            if let Some(o) = v.as_object() {
                for (k, c) in o {
                    at.push(k.clone());
                    out.push(at.clone());
                    paths(c, at, out);
                    at.pop();
                }
            }
        }
        let mut all = Vec::new();
        paths(&genuine(), &mut Vec::new(), &mut all);
        for _ in 0..5000 {
            let mut m = genuine();
            let path = &all[rng.gen_range(0..all.len())];
            let mut cur = &mut m;
            for k in &path[..path.len() - 1] {
                cur = &mut cur[k.as_str()];
            }
            let last = path[path.len() - 1].as_str();
            if rng.gen_bool(0.2) {
                cur.as_object_mut().unwrap().remove(last);
            } else {
                cur[last] = replacements[rng.gen_range(0..replacements.len())].clone();
            }
            let _ = check_header(&m);
            let mut bytes = serde_json::to_vec(&m).unwrap();
            if !bytes.is_empty() {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] = rng.r#gen();
            }
            let _ = check_header_json(&bytes);
        }
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        for input in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            b"{\"keyslots\":[1,2],\"segments\":7}",
            b"\xff\xfe",
            b"{\"keyslots\":{\"x\":{}},\"digests\":{\"0\":[]}}",
        ] {
            assert!(check_header_json(input).is_err());
        }
        let deep = "[".repeat(100_000);
        assert!(check_header_json(deep.as_bytes()).is_err());
    }
}
