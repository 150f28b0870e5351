//! `cargo xtask image`: the appliance disk image and the firmware upgrade bundle.
//!
//! Owns: building `target/image/<name>-<version>-x86_64.img` (+ `.img.zst`) and
//! `<name>-<version>.upgrade` from `image/`, `board/`, `systemd/` and the release
//! binaries, without loop mounts or chroots: mmdebstrap into a cached tarball, plain file
//! operations on an extracted tree, mksquashfs, mkfs.vfat + mtools, mkfs.ext4 -d, sfdisk on
//! a file. Must not touch `crates/` nor hold board facts (they are in the TOML files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use xshell::{Shell, cmd};

use crate::spec::{BoardSpec, ImageSpec};
use crate::{host, project_root, section};

/// systemd-boot from the host's systemd-boot-efi package (the same systemd 252 as the rootfs).
const SYSTEMD_BOOT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

#[derive(clap::Args, Default)]
pub struct Args {
    /// Rebuild the Debian rootfs tarball even if the cache has one for this package list.
    #[arg(long)]
    pub rebuild_rootfs: bool,
    /// zstd level of the compressed raw image (the slot is already zstd-compressed
    /// squashfs, so higher levels mostly cost time).
    #[arg(long, default_value_t = 19)]
    pub zstd_level: u32,
    /// Use this prebuilt `tandem` binary instead of `cargo build --release -p tandem`
    /// (a release pipeline's artifact, or a build of another commit).
    #[arg(long)]
    pub tandem_bin: Option<PathBuf>,
    /// Use this prebuilt `tandemctl` binary instead of building `tandem-cli`.
    #[arg(long)]
    pub tandemctl_bin: Option<PathBuf>,
    /// Cargo profile of the binaries (default `release`, what ships; another profile of
    /// the root Cargo.toml for a faster build of a test image).
    #[arg(long)]
    pub profile: Option<String>,
    /// Append `-SUFFIX` to the image version (a second build for upgrade tests).
    #[arg(long)]
    pub version_suffix: Option<String>,
    /// Test build: the supervisor never sends READY (`sleep infinity` instead), so a trial
    /// boot of it never gets healthy and must roll back. Implies `--version-suffix broken`.
    #[arg(long)]
    pub broken: bool,
    /// Test build: reboot an unhealthy trial boot after this many seconds instead of the
    /// unit's 300 s (tandem-trial-timeout.timer drop-in).
    #[arg(long)]
    pub trial_timeout_s: Option<u32>,
    /// Test build: once the first configuration is applied (once per node), print a security
    /// report on the second serial port (ttyS1: `systemd-analyze security`, the services' uids,
    /// capabilities and open-file limits, sysctls, the firewall and its counters).
    #[arg(long)]
    pub diagnostics: bool,
}

/// Where the build puts its results.
pub struct Outputs {
    pub dir: PathBuf,
    pub img: PathBuf,
    pub zst: PathBuf,
    pub upgrade: PathBuf,
    /// The kernel of the last build (the pair's KVM probe boots it).
    pub vmlinuz: PathBuf,
}

impl Outputs {
    pub fn new(spec: &ImageSpec, version: &str) -> Self {
        let dir = project_root().join("target/image");
        let name = &spec.image.name;
        Outputs {
            img: dir.join(format!("{name}-{version}-x86_64.img")),
            zst: dir.join(format!("{name}-{version}-x86_64.img.zst")),
            upgrade: dir.join(format!("{name}-{version}.upgrade")),
            vmlinuz: dir.join("work/vmlinuz"),
            dir,
        }
    }
}

/// The workspace version (`[workspace.package] version` of the root Cargo.toml).
pub fn workspace_version() -> Result<String> {
    let path = project_root().join("Cargo.toml");
    let text = std::fs::read_to_string(&path).context("reading the root Cargo.toml")?;
    let table: toml::Table = toml::from_str(&text).context("parsing the root Cargo.toml")?;
    table
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .context("the root Cargo.toml has no [workspace.package] version")
}

/// Builds the image if it is missing (used by `pair` and `test --system`).
pub fn ensure_built(sh: &Shell) -> Result<Outputs> {
    let spec = ImageSpec::load()?;
    let out = Outputs::new(&spec, &workspace_version()?);
    if !out.img.exists() || !out.vmlinuz.exists() {
        run(
            sh,
            Args {
                zstd_level: 19,
                ..Default::default()
            },
        )?;
    }
    Ok(out)
}

pub fn run(sh: &Shell, args: Args) -> Result<Outputs> {
    let started = Instant::now();
    let spec = ImageSpec::load()?;
    let board = BoardSpec::load(&spec.image.board)?;
    let mut version = workspace_version()?;
    let suffix = args
        .version_suffix
        .clone()
        .or_else(|| args.broken.then(|| "broken".to_owned()));
    if let Some(suffix) = &suffix {
        version = format!("{version}-{suffix}");
    }
    let out = Outputs::new(&spec, &version);
    let root_dir = project_root();
    host::ensure_packages_from(
        sh,
        &root_dir.join("image/host-packages.txt"),
        &spec.mirror()?,
    )?;

    let work = out.dir.join("work");
    let cache = out.dir.join("cache");
    let keys = out.dir.join("keys");
    for d in [&out.dir, &cache, &keys] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;

    let binaries = match (&args.tandem_bin, &args.tandemctl_bin) {
        (Some(bin), ctl) => Binaries {
            tandem: std::fs::canonicalize(bin)
                .with_context(|| format!("--tandem-bin {}", bin.display()))?,
            tandemctl: ctl
                .as_ref()
                .map(|c| {
                    std::fs::canonicalize(c)
                        .with_context(|| format!("--tandemctl-bin {}", c.display()))
                })
                .transpose()?,
        },
        (None, _) => build_binaries(sh, args.profile.as_deref().unwrap_or("release"))?,
    };
    let tarball = rootfs_tarball(sh, &spec, &board, &cache, args.rebuild_rootfs)?;
    let t_rootfs = started.elapsed();

    section("extracting and customising the root file system");
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    cmd!(sh, "tar -C {rootfs} --numeric-owner -xpf {tarball}").run()?;
    let key = ensure_build_key(sh, &keys)?;
    let kver = customise(sh, &spec, &board, &rootfs, &binaries, &key, &version)?;
    test_build_changes(&rootfs, &args)?;

    // Kernel and initramfs leave the root file system: they go to the ESP, per slot.
    let vmlinuz = work.join("vmlinuz");
    let initrd = work.join("initrd.img");
    move_file(&rootfs.join(format!("boot/vmlinuz-{kver}")), &vmlinuz)?;
    move_file(&rootfs.join(format!("boot/initrd.img-{kver}")), &initrd)?;

    section("squashfs of the root slot");
    let slot = work.join("rootfs.squashfs");
    cmd!(
        sh,
        "mksquashfs {rootfs} {slot} -noappend -quiet -comp zstd -Xcompression-level 15 -b 256K -xattrs"
    )
    .run()?;
    let slot_size = file_len(&slot)?;
    let slot_part = spec.part("slot-a").size_mib * MIB;
    ensure!(
        slot_size <= slot_part,
        "the slot image ({slot_size} bytes) does not fit the slot partition ({slot_part} bytes): \
         raise partitions.part.size_mib in image/image.toml"
    );

    let cmdline = board.kernel.cmdline.join(" ");
    let esp = build_esp(sh, &spec, &work, &vmlinuz, &initrd, &cmdline, &version)?;
    let data = build_data(sh, &spec, &work)?;

    section("assembling the GPT disk image");
    let tmp_img = out.img.with_extension("img.tmp");
    assemble(
        sh,
        &spec,
        &tmp_img,
        &[("esp", &esp), ("slot-a", &slot), ("data", &data)],
    )?;
    std::fs::rename(&tmp_img, &out.img)?;
    let img = &out.img;
    cmd!(sh, "sfdisk --dump {img}").run()?;

    section("compressing the raw image");
    let t_zst = Instant::now();
    let level = format!("-{}", args.zstd_level);
    let zst = &out.zst;
    cmd!(sh, "zstd -q -f -T0 --long=27 {level} {img} -o {zst}").run()?;
    let t_zst = t_zst.elapsed();

    section("upgrade bundle");
    let manifest = rootfs.join("usr/share/tandem/manifest.txt");
    build_bundle(
        sh,
        &work,
        &key,
        &[&slot, &vmlinuz, &initrd, &manifest],
        &out.upgrade,
    )?;

    let packages = std::fs::read_to_string(&manifest)?
        .lines()
        .skip_while(|l| *l != "packages:")
        .skip(1)
        .count();
    std::fs::copy(
        &manifest,
        out.dir
            .join(format!("{}-{version}.manifest.txt", spec.image.name)),
    )?;
    eprintln!(
        "\nimage built in {:.0?} (rootfs {:.0?}, zstd {:.0?})\n  {}  {} (raw, sparse)\n  {}  {}\n  {}  {}\n  slot squashfs {}, {packages} Debian packages, kernel {kver}",
        started.elapsed(),
        t_rootfs,
        t_zst,
        out.img.display(),
        human(file_len(&out.img)?),
        out.zst.display(),
        human(file_len(&out.zst)?),
        out.upgrade.display(),
        human(file_len(&out.upgrade)?),
        human(slot_size),
    );
    Ok(out)
}

const MIB: u64 = 1024 * 1024;

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("stat {}", p.display()))?
        .len())
}

fn move_file(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::remove_file(from).with_context(|| format!("removing {}", from.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The binaries that go into /usr/bin.
pub struct Binaries {
    pub tandem: PathBuf,
    pub tandemctl: Option<PathBuf>,
}

/// `cargo build --profile <profile> -p tandem -p <cli>`; returns the binaries.
pub fn build_binaries(sh: &Shell, profile: &str) -> Result<Binaries> {
    section(&format!("binaries (cargo profile {profile})"));
    let mut packages = vec!["tandem".to_owned()];
    let cli_manifest = project_root().join("crates/cli/Cargo.toml");
    if cli_manifest.exists() {
        let text = std::fs::read_to_string(&cli_manifest)?;
        let table: toml::Table = toml::from_str(&text).context("parsing crates/cli/Cargo.toml")?;
        let name = table
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .context("crates/cli/Cargo.toml has no package name")?;
        packages.push(name.to_owned());
    } else {
        eprintln!("note: crates/cli does not exist yet: the image ships without tandemctl");
    }
    let pkgs: Vec<String> = packages
        .iter()
        .flat_map(|p| ["-p".into(), p.clone()])
        .collect();
    let t = Instant::now();
    let mut build = cmd!(sh, "cargo build --locked --profile {profile} {pkgs...}");
    // `cargo xtask` runs us with xtask's own CARGO_PKG_*/CARGO_MANIFEST_* variables; build
    // scripts that watch them (ring: rerun-if-env-changed=CARGO_MANIFEST_DIR, ...) would
    // rerun, and everything above them rebuild, whenever a shell build and an xtask build
    // alternate in the shared target dir (5 minutes of fat LTO each time).
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*k)
        {
            build = build.env_remove(&key);
        }
    }
    build.run()?;
    eprintln!("binaries built in {:.0?}", t.elapsed());
    let dir = crate::cargo_target_dir().join(profile);
    Ok(Binaries {
        tandem: dir.join("tandem"),
        tandemctl: (packages.len() > 1).then(|| dir.join("tandemctl")),
    })
}

/// The Debian root file system as a tarball, cached by a hash of everything that goes
/// into it (sources, variant, package list, dpkg filters, initramfs configuration).
fn rootfs_tarball(
    sh: &Shell,
    spec: &ImageSpec,
    board: &BoardSpec,
    cache: &Path,
    rebuild: bool,
) -> Result<PathBuf> {
    // Runs after the essential set is installed and before the kernel: the kernel's
    // postinst then builds the small initramfs (MODULES=list) with these settings.
    let hook = format!(
        "#!/bin/sh\n# Generated by cargo xtask image (initramfs settings from board/{}.toml).\nset -e\n\
         mkdir -p \"$1/etc/initramfs-tools/conf.d\" \"$1/usr/share/initramfs-tools/modules.d\"\n\
         printf 'MODULES=list\\nCOMPRESS=zstd\\n' > \"$1/etc/initramfs-tools/conf.d/tandem.conf\"\n\
         printf '%s\\n' {} > \"$1/usr/share/initramfs-tools/modules.d/tandem\"\n",
        board.board.name,
        board.kernel.initramfs_modules.join(" ")
    );
    let key_material = format!(
        "{}\n{}\n{hook}",
        toml::to_string(&spec.rootfs).context("serialising rootfs")?,
        spec.packages
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let key_file = cache.join("rootfs-key.txt");
    write(&key_file, &key_material)?;
    let hash = cmd!(sh, "sha256sum {key_file}").quiet().read()?;
    let hash = hash.get(..16).context("sha256sum printed nothing")?;
    let tarball = cache.join(format!("rootfs-{}-{hash}.tar", spec.rootfs.suite));
    if tarball.exists() && !rebuild {
        eprintln!("rootfs: cached {}", tarball.display());
        return Ok(tarball);
    }
    section("mmdebstrap (Debian binary packages)");
    let hook_file = cache.join("essential-hook.sh");
    write(&hook_file, &hook)?;
    cmd!(sh, "chmod 0755 {hook_file}").run()?;
    let mut args = vec![
        format!("--variant={}", spec.rootfs.variant),
        "--aptopt=Apt::Install-Recommends \"false\"".to_owned(),
        format!("--essential-hook={}", hook_file.display()),
        format!(
            "--include={}",
            spec.packages
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
    ];
    args.extend(
        spec.rootfs
            .path_exclude
            .iter()
            .map(|p| format!("--dpkgopt=path-exclude={p}")),
    );
    args.extend(
        spec.rootfs
            .path_include
            .iter()
            .map(|p| format!("--dpkgopt=path-include={p}")),
    );
    let suite = &spec.rootfs.suite;
    let tmp = tarball.with_extension("tar.tmp");
    let sources = &spec.rootfs.sources;
    // mmdebstrap picks the output format from the name: say "tar" explicitly for .tmp.
    cmd!(
        sh,
        "mmdebstrap --format=tar {args...} {suite} {tmp} {sources...}"
    )
    .run()?;
    std::fs::rename(&tmp, &tarball)?;
    Ok(tarball)
}

/// The bare-Debian baseline for the boot-time comparison: the same cached Debian rootfs
/// (same kernel, same packages) without any Tandem file or unit, the distribution's own
/// serial getty (a login prompt), as slot A of a copy of the appliance image (same ESP,
/// systemd-boot, kernel, initramfs and command line). Returns the disk image.
pub fn build_baseline(sh: &Shell, appliance: &Outputs) -> Result<PathBuf> {
    let spec = ImageSpec::load()?;
    let board = BoardSpec::load(&spec.image.board)?;
    let cache = appliance.dir.join("cache");
    let tarball = rootfs_tarball(sh, &spec, &board, &cache, false)?;
    section("bare-Debian baseline image");
    let work = appliance.dir.join("baseline");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    cmd!(sh, "tar -C {rootfs} --numeric-owner -xpf {tarball}").run()?;
    // A read-only root: an empty machine-id (systemd mounts a transient one) and no
    // systemd-firstboot, which would otherwise prompt on the console at every boot.
    write(&rootfs.join("etc/machine-id"), "")?;
    cmd!(
        sh,
        "systemctl --root={rootfs} mask systemd-firstboot.service"
    )
    .run()?;
    // Once the boot is over (after the login prompt), systemd-analyze on the console, so
    // the system test reports the baseline's boot with the same tool as the appliance's.
    let report = rootfs.join("usr/local/sbin/boot-report");
    write(
        &report,
        "#!/bin/sh\n# Generated by cargo xtask image (the bare-Debian baseline only).\n\
         sleep 5\nuntil systemd-analyze time >/dev/null 2>&1; do sleep 1; done\n{\n\
         echo '=== boot report'\nsystemd-analyze time\n\
         systemd-analyze critical-chain --no-pager serial-getty@ttyS0.service\n\
         echo 'slowest units (systemd-analyze blame):'\n\
         systemd-analyze blame --no-pager | head -n 25\necho '=== end of boot report'\n\
         } >/dev/ttyS0 2>&1\n",
    )?;
    cmd!(sh, "chmod 0755 {report}").run()?;
    write(
        &rootfs.join("etc/systemd/system/boot-report.service"),
        "# Generated by cargo xtask image (the bare-Debian baseline only).\n[Unit]\n\
         Description=systemd-analyze on the console once the boot is over\n\
         After=multi-user.target\n\n[Service]\nType=simple\n\
         ExecStart=/usr/local/sbin/boot-report\n\n[Install]\nWantedBy=multi-user.target\n",
    )?;
    cmd!(sh, "systemctl --root={rootfs} enable boot-report.service").run()?;
    let slot = work.join("rootfs.squashfs");
    cmd!(
        sh,
        "mksquashfs {rootfs} {slot} -noappend -quiet -comp zstd -Xcompression-level 15 -b 256K -xattrs"
    )
    .run()?;
    let mut start = MIB;
    let align = spec.partitions.alignment_mib.max(1) * MIB;
    let mut offset = None;
    for p in &spec.partitions.part {
        start = start.div_ceil(align) * align;
        if p.role == "slot-a" {
            ensure!(
                file_len(&slot)? <= p.size_mib * MIB,
                "the baseline rootfs does not fit slot A"
            );
            offset = Some(start);
        }
        start += p.size_mib * MIB;
    }
    let offset = offset.context("no slot-a partition in image.toml")?;
    let img = appliance.dir.join("baseline-x86_64.img");
    let base = &appliance.img;
    cmd!(sh, "cp --sparse=always {base} {img}").run()?;
    let seek = format!("seek={}", offset / MIB);
    let input = format!("if={}", slot.display());
    let output = format!("of={}", img.display());
    cmd!(
        sh,
        "dd {input} {output} bs=1M {seek} conv=notrunc status=none"
    )
    .run()?;
    std::fs::remove_dir_all(&rootfs)?;
    Ok(img)
}

/// The ed25519 build key that signs upgrade bundles; generated once per build machine.
/// Returns the private key path (the public key is next to it, `.pub.pem`).
fn ensure_build_key(sh: &Shell, keys: &Path) -> Result<PathBuf> {
    let key = keys.join("build-key.pem");
    let public = keys.join("build-key.pub.pem");
    if !key.exists() {
        section("generating the ed25519 build key (target/image/keys, never committed)");
        cmd!(sh, "openssl genpkey -algorithm ed25519 -out {key}").run()?;
        cmd!(sh, "chmod 0600 {key}").run()?;
    }
    if !public.exists() {
        cmd!(sh, "openssl pkey -in {key} -pubout -out {public}").run()?;
    }
    Ok(key)
}

/// Turns the extracted Debian tree into the appliance root; returns the kernel version.
fn customise(
    sh: &Shell,
    spec: &ImageSpec,
    board: &BoardSpec,
    root: &Path,
    bin: &Binaries,
    key: &Path,
    version: &str,
) -> Result<String> {
    let src = project_root();
    // Files that are the same on every board.
    let overlay = src.join("image/overlay");
    cmd!(sh, "cp -a --no-preserve=ownership {overlay}/. {root}/").run()?;
    for d in ["data", "efi"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    // An empty machine-id: systemd mounts a transient one over it (the root is read-only).
    write(&root.join("etc/machine-id"), "")?;
    write(
        &root.join("etc/hostname"),
        &format!("{}\n", spec.image.name),
    )?;

    // Units.
    let unit_dir = root.join("usr/lib/systemd/system");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(src.join("systemd"))? {
        let p = entry?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if p.is_dir() && name.ends_with(".d") {
            cmd!(sh, "cp -a --no-preserve=ownership {p} {unit_dir}/").run()?;
        } else if name.ends_with(".service")
            || name.ends_with(".target")
            || name.ends_with(".timer")
        {
            std::fs::copy(&p, unit_dir.join(&name))?;
            units.push(name);
        }
    }
    units.sort();
    let enable = &units;
    cmd!(sh, "systemctl --root={root} enable {enable...}").run()?;
    // Debian's own blessing would run at boot-complete.target, before the node is known
    // healthy; systemd-firstboot would prompt on the console at every boot (the machine-id
    // is empty on a read-only root). Both are replaced by Tandem units. systemd-repart
    // grows the data partition once, from tandem-firstboot, not at every boot.
    // No login prompts on the VGA consoles (getty@tty1, and getty-static's tty2-6, which
    // Debian starts when there is no logind): no account can log in there, the serial
    // console (tandemctl) is the only way in; they cost ~2 s of the one vCPU under TCG.
    // Debian's nftables.service (/etc/nftables.conf) is replaced by tandem-firewall.service,
    // which loads the rules the supervisor generated (docs/security.md).
    cmd!(
        sh,
        "systemctl --root={root} mask systemd-bless-boot.service systemd-firstboot.service
         systemd-repart.service getty-static.service getty@tty1.service nftables.service"
    )
    .run()?;
    // The accounts (the services' `tandem`, the operator groups) exist in /etc before the
    // root becomes read-only: systemd-sysusers from the overlay's sysusers.d, at build time.
    cmd!(sh, "systemd-sysusers --root={root}").run()?;

    // Binaries and the firmware verification key.
    let usr_bin = root.join("usr/bin");
    std::fs::copy(&bin.tandem, usr_bin.join("tandem"))
        .with_context(|| format!("copying {}", bin.tandem.display()))?;
    if let Some(ctl) = &bin.tandemctl {
        std::fs::copy(ctl, usr_bin.join("tandemctl"))
            .with_context(|| format!("copying {}", ctl.display()))?;
    }
    // The release profile keeps line tables for backtraces on the build host; the image
    // gets the binaries without debug sections (the manifest records the unstripped sha256).
    for name in ["tandem", "tandemctl"] {
        let b = usr_bin.join(name);
        if b.exists() {
            cmd!(sh, "strip --strip-debug {b}").run()?;
        }
    }
    let share = root.join("usr/share/tandem");
    std::fs::create_dir_all(&share)?;
    std::fs::copy(
        key.with_extension("pub.pem"),
        share.join("firmware-key.pub.pem"),
    )?;
    let doc = root.join("usr/share/doc/tandem");
    std::fs::create_dir_all(&doc)?;
    let image_doc = src.join("docs/image.md");
    if image_doc.exists() {
        std::fs::copy(&image_doc, doc.join("image.md"))?;
    }

    render_board(board, root)?;
    let kver = prune_modules(sh, spec, board, root)?;
    write_manifest(sh, spec, board, root, bin, version, &kver)?;
    security_report(sh, root, &units, version)?;
    Ok(kver)
}

/// `systemd-analyze security --offline` of every Tandem unit on the finished tree (the
/// host's systemd 252 is the image's), printed and kept in `target/image/` beside the image
/// (docs/image.md records the figures). Exposure is systemd's 0-10 scale: 0.0 PERFECT,
/// below 1.0 SAFE, below 5.0 OK, below 7.5 MEDIUM, below 9.0 EXPOSED, then UNSAFE.
fn security_report(sh: &Shell, root: &Path, units: &[String], version: &str) -> Result<()> {
    section("systemd-analyze security (offline) of the Tandem units");
    let mut services: Vec<String> = units
        .iter()
        .filter(|u| u.ends_with(".service"))
        .cloned()
        .collect();
    services.push("serial-getty@ttyS0.service".into());
    let mut report = String::new();
    for unit in &services {
        let root_arg = format!("--root={}", root.display());
        let out = cmd!(
            sh,
            "systemd-analyze security --offline=yes {root_arg} {unit}"
        )
        .quiet()
        .ignore_status()
        .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let verdict = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .map(|l| l.trim_start_matches(['→', ' ']).to_owned())
            .unwrap_or_else(|| {
                format!(
                    "{unit}: no verdict ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
        eprintln!("  {verdict}");
        report.push_str(&format!("==> {unit}\n{text}\n"));
    }
    let file = project_root().join(format!("target/image/security-{version}.txt"));
    write(&file, &report)?;
    eprintln!("details: {}", file.display());
    Ok(())
}

/// The test-build switches (`--broken`, `--trial-timeout-s`), as unit drop-ins.
fn test_build_changes(root: &Path, args: &Args) -> Result<()> {
    let units = root.join("usr/lib/systemd/system");
    if args.broken {
        eprintln!("TEST BUILD: the supervisor never gets READY (--broken)");
        write(
            &units.join("tandem-supervisor.service.d/50-broken-test-build.conf"),
            "# cargo xtask image --broken: a build whose supervisor never sends READY=1.\n\
             [Service]\nExecStart=\nExecStart=/bin/sleep infinity\n",
        )?;
    }
    if args.diagnostics {
        eprintln!("TEST BUILD: a security report on ttyS1 after the first apply (--diagnostics)");
        write(&units.join("tandem-diagnostics.service"), DIAGNOSTICS_UNIT)?;
        write(&units.join("tandem-diagnostics.path"), DIAGNOSTICS_PATH)?;
        let script = root.join("usr/lib/tandem/diagnostics");
        write(&script, DIAGNOSTICS_SCRIPT)?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let wants = units.join("multi-user.target.wants");
        std::fs::create_dir_all(&wants)?;
        std::os::unix::fs::symlink(
            "../tandem-diagnostics.path",
            wants.join("tandem-diagnostics.path"),
        )
        .context("enabling tandem-diagnostics.path")?;
    }
    if let Some(s) = args.trial_timeout_s {
        eprintln!("TEST BUILD: trial boots give up after {s} s (--trial-timeout-s)");
        write(
            &units.join("tandem-trial-timeout.timer.d/50-test-build.conf"),
            &format!(
                "# cargo xtask image --trial-timeout-s {s}\n[Timer]\nOnBootSec=\nOnBootSec={s}s\n"
            ),
        )?;
    }
    Ok(())
}

/// `--diagnostics`: the report runs once per node, when the first configuration is applied
/// (later boots skip it: its CPU time would distort the system tier's boot-time figures).
const DIAGNOSTICS_PATH: &str = "# cargo xtask image --diagnostics (test build only).
[Unit]
Description=Security report on ttyS1 once a configuration is applied (test build)
ConditionPathExists=!/data/tandem/diagnostics.done

[Path]
PathExists=/data/config/running.yaml
";

const DIAGNOSTICS_UNIT: &str = "# cargo xtask image --diagnostics (test build only).
[Unit]
Description=Security report on ttyS1 (test build)

[Service]
Type=oneshot
# Once per boot: an inactive service would be started again while the path exists.
RemainAfterExit=yes
ExecStart=/usr/lib/tandem/diagnostics
";

/// What the system tier reads back from ttyS1 (docs/image.md records it). Bounded waits:
/// for the proxy and the VRRP daemon to run as the service user and the firewall table.
const DIAGNOSTICS_SCRIPT: &str = r##"#!/bin/sh
# cargo xtask image --diagnostics (test build only): a security report on ttyS1.
exec >/dev/ttyS1 2>&1
pid_of() {
    for p in /proc/[0-9]*; do
        if (tr '\0' ' ' <"$p/cmdline") 2>/dev/null | grep -q "^/usr/bin/tandem $1 "; then
            echo "${p#/proc/}"
            return 0
        fi
    done
    return 1
}
i=0
until pid_of proxy >/dev/null && pid_of vrrp >/dev/null && nft list table inet tandem >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -gt 90 ] && break
    sleep 2
done
sleep 5
echo "=== security report"
echo "--- systemd-analyze security (live)"
systemd-analyze security --no-pager | sed -n '1p;/tandem/p;/serial-getty/p'
for u in $(systemctl list-unit-files --no-legend 'tandem*.service' | cut -d' ' -f1) serial-getty@ttyS0.service; do
    systemd-analyze security --no-pager "$u" 2>&1 | grep 'Overall exposure'
done
echo "--- processes (uid, capabilities, open files)"
for p in /proc/[0-9]*; do
    cmd=$( (tr '\0' ' ' <"$p/cmdline") 2>/dev/null)
    case "$cmd" in
        /usr/bin/tandem*)
            echo "pid ${p#/proc/}: $cmd"
            grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "$p/status" | sed 's/^/    /'
            grep 'Max open files' "$p/limits" | sed 's/^/    /'
            ;;
    esac
done
echo "--- sysctl"
for k in fs/nr_open fs/file-max net/ipv4/conf/all/rp_filter net/ipv4/conf/lan/rp_filter \
    net/ipv4/conf/all/accept_redirects net/ipv4/conf/lan/accept_redirects \
    net/ipv4/conf/all/send_redirects net/ipv6/conf/lan/accept_ra net/ipv4/tcp_syncookies \
    kernel/sysrq net/ipv4/ip_nonlocal_bind net/ipv4/ip_local_port_range net/core/somaxconn \
    net/ipv4/tcp_max_syn_backlog; do
    echo "$k = $(cat /proc/sys/$k 2>&1)"
done
echo "--- accounts"
grep '^tandem' /etc/passwd /etc/group
echo "--- files"
ls -ld /run/tandem /run/tandem/* /data /data/config /data/certs 2>&1
echo "--- modules"
grep -E '^(nf_|nft_|nfnetlink)' /proc/modules | cut -d' ' -f1
echo "--- units"
systemctl --no-pager --failed
journalctl -b --no-pager -o cat -u tandem-firewall.service | tail -n 20
echo "--- nft list ruleset"
nft list ruleset
echo "=== end of security report"
touch /data/tandem/diagnostics.done
"##;

/// Board data rendered as configuration files.
fn render_board(board: &BoardSpec, root: &Path) -> Result<()> {
    let console = format!("console={},{}", board.console.tty, board.console.baud);
    ensure!(
        board.kernel.cmdline.contains(&console),
        "board {}: kernel.cmdline must contain `{console}` (the [console] section)",
        board.board.name
    );
    eprintln!("board {}: {}", board.board.name, board.board.description);
    let header = format!(
        "# Generated by cargo xtask image from board/{}.toml.\n",
        board.board.name
    );
    let sysctl: String = board
        .sysctl
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    write(
        &root.join("etc/sysctl.d/90-tandem-board.conf"),
        &format!("{header}{sysctl}"),
    )?;
    let wd = &board.watchdog;
    write(
        &root.join("etc/modules-load.d/tandem-watchdog.conf"),
        &format!("{header}{}\n{}\n", wd.driver, wd.qemu_driver),
    )?;
    write(
        &root.join("etc/systemd/system.conf.d/tandem-watchdog.conf"),
        &format!(
            "{header}[Manager]\nRuntimeWatchdogSec={}s\nRebootWatchdogSec={}s\n",
            wd.runtime_s, wd.reboot_s
        ),
    )?;
    let deny: String = board
        .kernel
        .deny_modules
        .iter()
        .map(|m| format!("blacklist {m}\ninstall {m} /bin/false\n"))
        .collect();
    write(
        &root.join("etc/modprobe.d/tandem-deny.conf"),
        &format!("{header}{deny}"),
    )?;
    for nic in &board.nics {
        let role = &nic.role;
        write(
            &root.join(format!("etc/systemd/network/10-tandem-{role}.link")),
            &format!(
                "{header}[Match]\nPath={}\n\n[Link]\nName={role}\n",
                nic.pci_path
            ),
        )?;
        write(
            &root.join(format!("etc/systemd/network/11-tandem-{role}-qemu.link")),
            &format!(
                "{header}# The QEMU stand-in of the board (cargo xtask pair).\n[Match]\nMACAddress={}\n\n[Link]\nName={role}\n",
                nic.qemu_macs.join(" ")
            ),
        )?;
    }
    Ok(())
}

/// Keeps the kernel modules under the image's and board's directories plus everything
/// they depend on (from modules.dep); removes the rest and reruns depmod.
fn prune_modules(sh: &Shell, spec: &ImageSpec, board: &BoardSpec, root: &Path) -> Result<String> {
    let modules = root.join("usr/lib/modules");
    let mut versions: Vec<String> = std::fs::read_dir(&modules)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(
        versions.len() == 1,
        "expected one kernel in the rootfs, found {versions:?}"
    );
    let kver = versions.remove(0);
    let dir = modules.join(&kver);
    let dep_text = std::fs::read_to_string(dir.join("modules.dep"))?;
    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(module, rest.split_whitespace().collect());
    }
    let prefixes: Vec<String> = spec
        .kernel
        .keep_modules
        .iter()
        .chain(&board.kernel.keep_modules)
        .map(|p| format!("kernel/{p}"))
        .collect();
    let by_name: BTreeSet<String> = board
        .kernel
        .initramfs_modules
        .iter()
        .chain([&board.watchdog.driver, &board.watchdog.qemu_driver])
        .map(|m| m.replace('-', "_"))
        .collect();
    let base = |m: &str| -> String {
        let file = m.rsplit('/').next().unwrap_or(m);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = deps
        .keys()
        .copied()
        .filter(|m| {
            prefixes
                .iter()
                .any(|p| m == p || m.starts_with(&format!("{p}/")))
                || by_name.contains(&base(m))
        })
        .collect();
    while let Some(m) = todo.pop() {
        if keep.insert(m) {
            todo.extend(deps.get(m).into_iter().flatten().copied());
        }
    }
    let mut removed = 0usize;
    for m in deps.keys() {
        if !keep.contains(m) {
            std::fs::remove_file(dir.join(m)).with_context(|| format!("removing module {m}"))?;
            removed += 1;
        }
    }
    cmd!(sh, "find {dir}/kernel -type d -empty -delete").run()?;
    cmd!(sh, "depmod -b {root} {kver}").run()?;
    eprintln!("kernel modules: kept {}, removed {removed}", keep.len());
    // System.map, config: not needed at run time.
    for f in ["System.map", "config"] {
        let p = root.join(format!("boot/{f}-{kver}"));
        if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    Ok(kver)
}

/// `/usr/share/tandem/manifest.txt`: what this image is made of (`tandemctl show version`).
fn write_manifest(
    sh: &Shell,
    spec: &ImageSpec,
    board: &BoardSpec,
    root: &Path,
    bin: &Binaries,
    version: &str,
    kver: &str,
) -> Result<()> {
    let admindir = root.join("var/lib/dpkg");
    let format = "${Package} ${Version}\n";
    let packages = cmd!(sh, "dpkg-query --admindir={admindir} -W -f={format}")
        .quiet()
        .read()?;
    let commit = cmd!(sh, "git rev-parse HEAD").quiet().read()?;
    let dirty = !cmd!(sh, "git status --porcelain --untracked-files=no")
        .quiet()
        .read()?
        .is_empty();
    let built = cmd!(sh, "date -u +%Y-%m-%dT%H:%M:%SZ").quiet().read()?;
    let tandem = &bin.tandem;
    let tandem_sha = cmd!(sh, "sha256sum {tandem}").quiet().read()?;
    let tandem_sha = tandem_sha.split_whitespace().next().unwrap_or_default();
    let mut text = format!(
        "name: {}\nversion: {version}\ngit: {commit}{}\nbuilt: {built}\nboard: {}\nkernel: {kver}\nsuite: {}\n",
        spec.image.name,
        if dirty { "-dirty" } else { "" },
        board.board.name,
        spec.rootfs.suite,
    );
    for s in &spec.rootfs.sources {
        text.push_str(&format!("source: {s}\n"));
    }
    text.push_str(&format!(
        "tandem-sha256: {tandem_sha}\npackages:\n{packages}\n"
    ));
    write(&root.join("usr/share/tandem/manifest.txt"), &text)
}

/// The ESP: systemd-boot as the default EFI loader, loader.conf, and slot A's kernel,
/// initramfs and boot entry. Slot B is empty in a factory image (the first upgrade fills it).
fn build_esp(
    sh: &Shell,
    spec: &ImageSpec,
    work: &Path,
    vmlinuz: &Path,
    initrd: &Path,
    board_cmdline: &str,
    version: &str,
) -> Result<PathBuf> {
    section("ESP (mkfs.vfat + mtools)");
    let esp = work.join("esp.img");
    let part = spec.part("esp");
    let kib = (part.size_mib * 1024).to_string();
    cmd!(sh, "mkfs.vfat -F 32 -n TANDEM-ESP -C {esp} {kib}").run()?;
    let slot_a = &spec.part("slot-a").label;
    let loader = work.join("loader.conf");
    write(
        &loader,
        &format!(
            "# Written by cargo xtask image; firmware install rewrites `default`. The pattern\n\
             # matches the slot's blessed entry or a counted one with tries left, never one out\n\
             # of tries (systemd-boot 252 ids keep the counter): crates/firmware/src/slot.rs.\n\
             default {slot_a}[.+][c1-9]*\ntimeout {}\n# No editing the kernel command line at the console.\neditor no\nconsole-mode keep\n",
            spec.boot.menu_timeout_s
        ),
    )?;
    // The factory entry is already blessed (no `+tries`): there is no other slot to fall
    // back to. Entries written by `firmware install` carry `+<tries>`.
    let entry = work.join("entry.conf");
    write(&entry, &boot_entry(spec, "slot-a", board_cmdline, version))?;
    let _mtools = sh.push_env("MTOOLS_SKIP_CHECK", "1");
    let dirs = [
        "::/EFI",
        "::/EFI/BOOT",
        "::/EFI/systemd",
        "::/loader",
        "::/loader/entries",
    ];
    cmd!(sh, "mmd -i {esp} {dirs...} ::/{slot_a}").run()?;
    let efi = Path::new(SYSTEMD_BOOT_EFI);
    cmd!(sh, "mcopy -i {esp} {efi} ::/EFI/BOOT/BOOTX64.EFI").run()?;
    cmd!(
        sh,
        "mcopy -i {esp} {efi} ::/EFI/systemd/systemd-bootx64.efi"
    )
    .run()?;
    cmd!(sh, "mcopy -i {esp} {loader} ::/loader/loader.conf").run()?;
    cmd!(sh, "mcopy -i {esp} {entry} ::/loader/entries/{slot_a}.conf").run()?;
    cmd!(sh, "mcopy -i {esp} {vmlinuz} ::/{slot_a}/vmlinuz").run()?;
    cmd!(sh, "mcopy -i {esp} {initrd} ::/{slot_a}/initrd.img").run()?;
    cmd!(sh, "mdir -i {esp} -/ ::/").run()?;
    Ok(esp)
}

/// A systemd-boot entry for a slot (kernel and initramfs in the ESP's `/<label>/`).
pub fn boot_entry(spec: &ImageSpec, role: &str, board_cmdline: &str, version: &str) -> String {
    let label = &spec.part(role).label;
    let slot = role.trim_start_matches("slot-").to_uppercase();
    format!(
        "title Tandem {version} (slot {slot})\nversion {version}\nlinux /{label}/vmlinuz\n\
         initrd /{label}/initrd.img\noptions {board_cmdline} root=PARTLABEL={label} rootfstype=squashfs ro\n"
    )
}

/// The data partition: an ext4 file system with the top-level directories.
fn build_data(sh: &Shell, spec: &ImageSpec, work: &Path) -> Result<PathBuf> {
    section("data partition (mkfs.ext4 -d)");
    let tree = work.join("data");
    for d in &spec.data.dirs {
        std::fs::create_dir_all(tree.join(d))?;
    }
    let img = work.join("data.img");
    let part = spec.part("data");
    let size = format!("{}M", part.size_mib);
    let label = &part.label;
    cmd!(
        sh,
        "mkfs.ext4 -q -F -L {label} -E root_owner=0:0 -d {tree} {img} {size}"
    )
    .run()?;
    Ok(img)
}

/// Lays out the partitions of image.toml on a sparse file with sfdisk and copies each
/// partition image in place. Partitions without an image (slot B) stay zero.
fn assemble(sh: &Shell, spec: &ImageSpec, disk: &Path, images: &[(&str, &Path)]) -> Result<()> {
    const SECTOR: u64 = 512;
    let align = spec.partitions.alignment_mib.max(1) * MIB;
    let mut script = String::from("label: gpt\nunit: sectors\nfirst-lba: 2048\n");
    let mut start = MIB; // after the primary GPT, aligned
    let mut placed = Vec::new();
    for p in &spec.partitions.part {
        start = start.div_ceil(align) * align;
        let size = p.size_mib * MIB;
        script.push_str(&format!(
            "start={}, size={}, type={}, name=\"{}\"\n",
            start / SECTOR,
            size / SECTOR,
            p.type_,
            p.label
        ));
        placed.push((p.role.clone(), start));
        start += size;
    }
    let total = start + MIB; // room for the backup GPT
    if disk.exists() {
        std::fs::remove_file(disk)?;
    }
    let total_s = total.to_string();
    cmd!(sh, "truncate -s {total_s} {disk}").run()?;
    eprintln!("sfdisk script:\n{script}");
    cmd!(sh, "sfdisk --quiet --no-reread --no-tell-kernel {disk}")
        .stdin(script)
        .run()?;
    for (role, image) in images {
        let Some((_, offset)) = placed.iter().find(|(r, _)| r == role) else {
            bail!("no partition with role {role}");
        };
        let seek = format!("seek={}", offset / MIB);
        let input = format!("if={}", image.display());
        let output = format!("of={}", disk.display());
        cmd!(
            sh,
            "dd {input} {output} bs=1M {seek} conv=notrunc,sparse status=none"
        )
        .run()?;
    }
    Ok(())
}

/// The upgrade bundle: a tar of the slot image, kernel, initramfs and manifest, with
/// `SHA256SUMS` and its ed25519 signature (`SHA256SUMS.sig`, raw 64 bytes, RFC 8032)
/// by the build key. `tandemctl firmware install` verifies both before writing a slot.
fn build_bundle(sh: &Shell, work: &Path, key: &Path, files: &[&Path], out: &Path) -> Result<()> {
    let dir = work.join("bundle");
    std::fs::create_dir_all(&dir)?;
    let mut names = Vec::new();
    for f in files {
        let name = f.file_name().context("bundle file without a name")?;
        std::fs::copy(f, dir.join(name))?;
        names.push(name.to_string_lossy().into_owned());
    }
    let _in_bundle = sh.push_dir(&dir);
    let listed = &names;
    let sums = cmd!(sh, "sha256sum {listed...}").read()?;
    write(&dir.join("SHA256SUMS"), &format!("{sums}\n"))?;
    cmd!(
        sh,
        "openssl pkeyutl -sign -inkey {key} -rawin -in SHA256SUMS -out SHA256SUMS.sig"
    )
    .run()?;
    let public = key.with_extension("pub.pem");
    cmd!(sh, "openssl pkeyutl -verify -pubin -inkey {public} -rawin -in SHA256SUMS -sigfile SHA256SUMS.sig")
        .run()?;
    let tmp = out.with_extension("upgrade.tmp");
    cmd!(sh, "tar --owner=0 --group=0 --numeric-owner --sort=name -cf {tmp} SHA256SUMS SHA256SUMS.sig {names...}")
        .run()?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}
