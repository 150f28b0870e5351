//! The upgrade bundle: an uncompressed tar written by `cargo xtask image` holding
//! `rootfs.squashfs`, `vmlinuz`, `initrd.img`, `manifest.txt`, `SHA256SUMS` (sha256sum
//! format) and `SHA256SUMS.sig` (raw 64-byte ed25519, RFC 8032, over the exact bytes of
//! `SHA256SUMS`, as `openssl pkeyutl -sign -rawin` makes it).
//!
//! Owns: indexing the tar without extracting it (members are read in place by offset),
//! checking the signature first, then every member's sha256, and refusing unlisted members.
//! Must not write anything: installing is [`crate::install`]'s job.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::DecodePublicKey as _;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{Error, Result, io};

/// The members a bundle must have (besides `SHA256SUMS` and its signature).
pub const REQUIRED: [&str; 4] = ["rootfs.squashfs", "vmlinuz", "initrd.img", "manifest.txt"];
/// Largest `SHA256SUMS`, manifest or signature read into memory.
const SMALL_MAX: u64 = 1 << 20;

/// One regular file inside the bundle tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Offset of the first data byte in the bundle file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The signed sha256 (lowercase hex), once verified.
    pub sha256: String,
}

/// A bundle whose signature and member hashes have been verified.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle file.
    pub path: PathBuf,
    /// Members by name (verified).
    pub members: BTreeMap<String, Member>,
    /// `manifest.txt` of the new image.
    pub manifest: String,
}

impl Bundle {
    /// Opens `path`, checks the signature of `SHA256SUMS` with the PEM public key at
    /// `key`, then the sha256 of every member. Nothing is trusted before the signature.
    pub fn verify(path: &Path, key: &Path) -> Result<Bundle> {
        let key_pem = std::fs::read_to_string(key).map_err(io("reading", key))?;
        let vk = VerifyingKey::from_public_key_pem(&key_pem).map_err(|e| Error::BadKey {
            path: key.to_owned(),
            reason: format!("not an ed25519 public key in PEM: {e}"),
        })?;
        let mut file = File::open(path).map_err(io("opening", path))?;
        let index = index_tar(&mut file, path)?;
        let format = |reason: String| Error::Format {
            path: path.to_owned(),
            reason,
        };
        let sums_m = index
            .get("SHA256SUMS")
            .ok_or_else(|| format("no SHA256SUMS member".into()))?;
        let sig_m = index
            .get("SHA256SUMS.sig")
            .ok_or_else(|| format("no SHA256SUMS.sig member".into()))?;
        let sums = read_small(&mut file, path, sums_m)?;
        let sig = read_small(&mut file, path, sig_m)?;
        let sig: [u8; 64] = sig
            .as_slice()
            .try_into()
            .map_err(|_| format(format!("SHA256SUMS.sig is {} bytes, not 64", sig.len())))?;
        vk.verify_strict(&sums, &Signature::from_bytes(&sig))
            .map_err(|_| Error::BadSignature {
                path: path.to_owned(),
                key: key.to_owned(),
            })?;
        // From here on SHA256SUMS is the build machine's word.
        let sums = String::from_utf8(sums).map_err(|_| format("SHA256SUMS is not UTF-8".into()))?;
        let mut listed = BTreeMap::new();
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (hash, name) = line
                .split_once("  ")
                .or_else(|| line.split_once(" *"))
                .ok_or_else(|| format(format!("SHA256SUMS line `{line}` is not `HASH  NAME`")))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format(format!("SHA256SUMS line `{line}`: bad hash")));
            }
            listed.insert(name.to_owned(), hash.to_ascii_lowercase());
        }
        for name in REQUIRED {
            if !listed.contains_key(name) {
                return Err(format(format!("SHA256SUMS does not list {name}")));
            }
        }
        let mut members = BTreeMap::new();
        for (name, (offset, len)) in &index {
            if name == "SHA256SUMS" || name == "SHA256SUMS.sig" {
                continue;
            }
            let expected = listed
                .remove(name)
                .ok_or_else(|| format(format!("member {name} is not listed in SHA256SUMS")))?;
            let actual = hash_range(&mut file, path, *offset, *len)?;
            if actual != expected {
                return Err(Error::HashMismatch {
                    what: format!("bundle {} member {name}", path.display()),
                    expected,
                    actual,
                });
            }
            members.insert(
                name.clone(),
                Member {
                    offset: *offset,
                    len: *len,
                    sha256: expected,
                },
            );
        }
        if let Some(name) = listed.keys().next() {
            return Err(format(format!("SHA256SUMS lists {name}, which is missing")));
        }
        let manifest = read_small(&mut file, path, &members["manifest.txt"].range())?;
        let manifest =
            String::from_utf8(manifest).map_err(|_| format("manifest.txt is not UTF-8".into()))?;
        Ok(Bundle {
            path: path.to_owned(),
            members,
            manifest,
        })
    }

    /// The member `name` (always present for [`REQUIRED`] names).
    pub fn member(&self, name: &str) -> &Member {
        &self.members[name]
    }

    /// The `version:` line of the new image's manifest.
    pub fn version(&self) -> &str {
        manifest_field(&self.manifest, "version").unwrap_or("unknown")
    }
}

impl Member {
    fn range(&self) -> (u64, u64) {
        (self.offset, self.len)
    }
}

/// The value of `key: value` in a manifest.
pub fn manifest_field<'a>(manifest: &'a str, key: &str) -> Option<&'a str> {
    manifest.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(": "))
            .map(str::trim)
    })
}

/// Regular files of a ustar/GNU tar: name → (data offset, length).
fn index_tar(file: &mut File, path: &Path) -> Result<BTreeMap<String, (u64, u64)>> {
    let total = file.metadata().map_err(io("stat", path))?.len();
    let format = |reason: String| Error::Format {
        path: path.to_owned(),
        reason,
    };
    let mut out = BTreeMap::new();
    let mut pos = 0u64;
    let mut header = [0u8; 512];
    while pos + 512 <= total {
        file.seek(SeekFrom::Start(pos))
            .map_err(io("seeking", path))?;
        file.read_exact(&mut header).map_err(io("reading", path))?;
        if header.iter().all(|b| *b == 0) {
            return Ok(out);
        }
        let stored: u32 = header[148..156].iter().map(|b| u32::from(*b)).sum::<u32>();
        let sum: u32 = header
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        let recorded = octal(&header[148..156])
            .ok_or_else(|| format(format!("bad header checksum field at {pos}")))?;
        if recorded != u64::from(sum) || stored == 0 {
            return Err(format(format!(
                "tar header checksum mismatch at offset {pos}"
            )));
        }
        let name_end = header[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&header[..name_end])
            .map_err(|_| format(format!("member name at {pos} is not UTF-8")))?
            .trim_start_matches("./")
            .to_owned();
        let len = octal(&header[124..136])
            .ok_or_else(|| format(format!("member {name}: bad size field")))?;
        let data = pos + 512;
        if data + len > total {
            return Err(format(format!(
                "member {name} runs past the end of the file"
            )));
        }
        match header[156] {
            b'0' | 0 => {
                if name.contains('/') || name.is_empty() {
                    return Err(format(format!(
                        "member `{name}`: only plain names are allowed"
                    )));
                }
                if out.insert(name.clone(), (data, len)).is_some() {
                    return Err(format(format!("member {name} appears twice")));
                }
            }
            b'5' if name.trim_end_matches('/').is_empty() => {}
            t => {
                return Err(format(format!(
                    "member `{name}` has type `{}`; only regular files are allowed",
                    t as char
                )));
            }
        }
        pos = data + len.div_ceil(512) * 512;
    }
    Err(format("no end-of-archive marker".into()))
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn read_small(file: &mut File, path: &Path, (offset, len): &(u64, u64)) -> Result<Vec<u8>> {
    if *len > SMALL_MAX {
        return Err(Error::Format {
            path: path.to_owned(),
            reason: format!("a metadata member of {len} bytes is too large"),
        });
    }
    file.seek(SeekFrom::Start(*offset))
        .map_err(io("seeking", path))?;
    let mut buf = vec![0; usize::try_from(*len).unwrap_or(0)];
    file.read_exact(&mut buf).map_err(io("reading", path))?;
    Ok(buf)
}

/// sha256 (lowercase hex) of `len` bytes of `file` from `offset`.
pub fn hash_range(file: &mut File, path: &Path, offset: u64, len: u64) -> Result<String> {
    file.seek(SeekFrom::Start(offset))
        .map_err(io("seeking", path))?;
    let mut hasher = Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        file.read_exact(&mut buf[..n])
            .map_err(io("reading", path))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    //! Bundles built in a temp dir like xtask builds them (tar + SHA256SUMS + raw ed25519).

    use super::*;
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::{Signer as _, SigningKey};

    /// A unique temp directory, removed on drop.
    pub struct TempDir(pub PathBuf);
    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("tandem-fw-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("temp dir");
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tar_header(name: &str, len: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{len:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    /// A tar of `files`, in order.
    pub fn tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in files {
            out.extend_from_slice(&tar_header(name, data.len() as u64));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    /// The build key of the tests and its PEM public key written to `dir/key.pub.pem`.
    pub fn key(dir: &Path) -> (SigningKey, PathBuf) {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        let path = dir.join("key.pub.pem");
        std::fs::write(&path, pem).expect("write key");
        (sk, path)
    }

    /// A signed bundle with these member contents; returns its path.
    pub fn bundle(dir: &Path, sk: &SigningKey, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let sums: String = files
            .iter()
            .map(|(n, d)| format!("{}  {n}\n", hex(&Sha256::digest(d))))
            .collect::<String>()
            + "\n";
        let sig = sk.sign(sums.as_bytes()).to_bytes().to_vec();
        let mut all = vec![("SHA256SUMS", sums.into_bytes()), ("SHA256SUMS.sig", sig)];
        all.extend(files.iter().cloned());
        let path = dir.join("t.upgrade");
        std::fs::write(&path, tar(&all)).expect("write bundle");
        path
    }

    /// Member contents of a good bundle whose slot image is `slot`.
    pub fn files(slot: &[u8], version: &str) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("initrd.img", b"initrd".to_vec()),
            (
                "manifest.txt",
                format!("name: tandem\nversion: {version}\n").into_bytes(),
            ),
            ("rootfs.squashfs", slot.to_vec()),
            ("vmlinuz", b"kernel".to_vec()),
        ]
    }

    #[test]
    fn good_bundle_verifies() {
        let d = TempDir::new("good");
        let (sk, key) = key(&d.0);
        let p = bundle(&d.0, &sk, &files(&[1u8; 3000], "0.2.0"));
        let b = Bundle::verify(&p, &key).expect("verifies");
        assert_eq!(b.version(), "0.2.0");
        assert_eq!(b.member("rootfs.squashfs").len, 3000);
    }

    #[test]
    fn tampered_member_is_refused() {
        let d = TempDir::new("tamper");
        let (sk, key) = key(&d.0);
        let p = bundle(&d.0, &sk, &files(&[1u8; 3000], "0.2.0"));
        let mut bytes = std::fs::read(&p).expect("read");
        let slot_at = bytes
            .windows(8)
            .position(|w| w == [1u8; 8])
            .expect("slot bytes");
        bytes[slot_at + 10] ^= 0xff;
        std::fs::write(&p, bytes).expect("write");
        let e = Bundle::verify(&p, &key).expect_err("refused");
        assert!(matches!(e, Error::HashMismatch { .. }), "{e}");
    }

    #[test]
    fn other_key_is_refused() {
        let d = TempDir::new("otherkey");
        let (_, key) = key(&d.0);
        let other = SigningKey::from_bytes(&[9u8; 32]);
        let p = bundle(&d.0, &other, &files(b"slot", "0.2.0"));
        let e = Bundle::verify(&p, &key).expect_err("refused");
        assert!(matches!(e, Error::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("does not verify"), "{e}");
    }

    #[test]
    fn unlisted_or_missing_members_are_refused() {
        let d = TempDir::new("unlisted");
        let (sk, key) = key(&d.0);
        let mut f = files(b"slot", "0.2.0");
        f.remove(0);
        let p = bundle(&d.0, &sk, &f);
        let e = Bundle::verify(&p, &key).expect_err("refused");
        assert!(e.to_string().contains("does not list initrd.img"), "{e}");
    }

    /// The exact format xtask produces: `openssl pkeyutl -sign -rawin` over SHA256SUMS and
    /// `tar --sort=name`; skipped when openssl or tar are missing.
    #[test]
    fn openssl_signed_gnu_tar_bundle_verifies() {
        let d = TempDir::new("openssl");
        let dir = &d.0;
        let run = |args: &[&str]| {
            std::process::Command::new(args[0])
                .args(&args[1..])
                .current_dir(dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !run(&[
            "openssl",
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            "k.pem",
        ]) {
            eprintln!("skipped: no openssl");
            return;
        }
        assert!(run(&[
            "openssl",
            "pkey",
            "-in",
            "k.pem",
            "-pubout",
            "-out",
            "k.pub.pem"
        ]));
        for (n, data) in files(&[5u8; 70000], "9.9.9") {
            std::fs::write(dir.join(n), data).expect("write");
        }
        let sums = std::process::Command::new("sha256sum")
            .args(REQUIRED)
            .current_dir(dir)
            .output()
            .expect("sha256sum");
        let mut text = sums.stdout;
        text.push(b'\n');
        std::fs::write(dir.join("SHA256SUMS"), text).expect("write");
        assert!(run(&[
            "openssl",
            "pkeyutl",
            "-sign",
            "-inkey",
            "k.pem",
            "-rawin",
            "-in",
            "SHA256SUMS",
            "-out",
            "SHA256SUMS.sig"
        ]));
        assert!(run(&[
            "tar",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--sort=name",
            "-cf",
            "b.upgrade",
            "SHA256SUMS",
            "SHA256SUMS.sig",
            "rootfs.squashfs",
            "vmlinuz",
            "initrd.img",
            "manifest.txt"
        ]));
        let b = Bundle::verify(&dir.join("b.upgrade"), &dir.join("k.pub.pem")).expect("verifies");
        assert_eq!(b.version(), "9.9.9");
    }
}
