//! A reproducible `newc` cpio writer, the format the Linux kernel unpacks as initramfs.
//!
//! Entries are kept in a sorted map and written with fixed owner (0:0), fixed mtime and
//! inode numbers assigned in path order, so the same tree always yields the same bytes.

use std::collections::BTreeMap;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File {
        /// Contents.
        data: Vec<u8>,
        /// Whether it gets the executable bits.
        executable: bool,
    },
    /// A symbolic link to the given target.
    Symlink(String),
}

/// An in-memory archive. Paths are relative (no leading `/`); parent directories are added
/// automatically.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn normalise(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn add_parents(&mut self, path: &str) {
        let mut cur = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            self.entries.entry(cur.clone()).or_insert(Entry::Dir);
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let p = normalise(path);
        self.add_parents(&p);
        self.entries.insert(p, Entry::Dir);
        self
    }

    /// Adds (or replaces) a regular file.
    pub fn file(&mut self, path: &str, data: Vec<u8>, executable: bool) -> &mut Self {
        let p = normalise(path);
        self.add_parents(&p);
        self.entries.insert(p, Entry::File { data, executable });
        self
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let p = normalise(path);
        self.add_parents(&p);
        self.entries.insert(p, Entry::Symlink(target.to_owned()));
        self
    }

    /// Whether a path is present.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&normalise(path))
    }

    /// Iterates over the entries in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Serialises the archive with every timestamp set to `mtime` (seconds since the epoch).
    pub fn to_bytes(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in (1u32..).zip(self.entries.iter()) {
            let (mode, data): (u32, &[u8]) = match entry {
                Entry::Dir => (0o040_755, &[]),
                Entry::File { data, executable } => {
                    (if *executable { 0o100_755 } else { 0o100_644 }, data)
                }
                Entry::Symlink(t) => (0o120_777, t.as_bytes()),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            write_header(&mut out, ino, mode, nlink, mtime, data.len(), path);
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        write_header(&mut out, 0, 0, 1, 0, 0, "TRAILER!!!");
        // Pad to 512 bytes like GNU cpio; the kernel does not need it but tools expect it.
        while !out.len().is_multiple_of(512) {
            out.push(0);
        }
        out
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn write_header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    name: &str,
) {
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        mtime,
        u32::try_from(size).unwrap_or(u32::MAX),
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        u32::try_from(namesize).unwrap_or(u32::MAX),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sorted() {
        let mut a = Archive::new();
        a.file("b/x", b"1".to_vec(), false)
            .file("a/y", b"22".to_vec(), true);
        let mut b = Archive::new();
        b.file("a/y", b"22".to_vec(), true)
            .file("b/x", b"1".to_vec(), false);
        assert_eq!(a.to_bytes(0), b.to_bytes(0));
        let names: Vec<_> = a.entries().map(|(p, _)| p.to_owned()).collect();
        assert_eq!(names, ["a", "a/y", "b", "b/x"]);
        let bytes = a.to_bytes(0);
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 512, 0);
    }

    #[test]
    fn cpio_tool_reads_it() {
        // The system cpio must list exactly our entries (format compatibility check).
        let Ok(_) = std::process::Command::new("cpio").arg("--version").output() else {
            constellation_testkit::skip_current(
                "cpio is not on PATH",
                "run scripts/install-deps.sh",
            );
            return;
        };
        let mut a = Archive::new();
        a.file("etc/hello", b"hi\n".to_vec(), false)
            .symlink("bin/sh", "busybox");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.cpio");
        std::fs::write(&f, a.to_bytes(1)).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&f)
            .output()
            .unwrap();
        let listing = String::from_utf8(out.stdout).unwrap();
        assert_eq!(listing, "bin\nbin/sh\netc\netc/hello\n");
    }
}
