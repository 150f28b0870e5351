//! A fault-injecting directory for crash tests: it separates what was written from what is
//! durable, can make the process "die" at any operation (the write in flight torn after any
//! number of bytes), and then simulates a power cut in which each write not yet synced is
//! lost, kept or torn, chosen by a seed.
//!
//! Owns the crash model only; used by this crate's tests and available to others (the
//! supervisor's). Must not be used by the running appliance.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::dir::{Dir, MemDir, MemFile};

/// What happens at a power cut to the writes that were not synced yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// None of them reached the medium.
    Nothing,
    /// All of them did (the torn one up to where it stopped).
    Everything,
    /// Each one independently: lost, kept whole, or kept up to a random byte (the disk may
    /// reorder writes between two syncs), from this seed.
    Seeded(u64),
}

#[derive(Debug, Default)]
struct State {
    /// What a power cut keeps for sure.
    durable: BTreeMap<String, MemFile>,
    /// What reads see (the page cache).
    current: BTreeMap<String, MemFile>,
    /// Writes since the last sync of their file, in order.
    pending: Vec<(String, u64, Vec<u8>)>,
    /// Operations (reserve, write, sync, replace) done so far.
    ops: u64,
    /// Die at this operation; a write is then kept up to `torn` bytes.
    crash_at: Option<(u64, usize)>,
    crashed: bool,
    /// Every write: operation number, file, size.
    writes: Vec<(u64, String, usize)>,
}

/// The fault-injecting directory. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FaultDir {
    state: Arc<Mutex<State>>,
}

fn died() -> io::Error {
    io::Error::other("injected crash: the process died here")
}

impl FaultDir {
    /// An empty directory.
    pub fn new() -> FaultDir {
        FaultDir::default()
    }

    /// A directory holding `dir`'s files, all durable.
    pub fn from_mem(dir: &MemDir) -> FaultDir {
        let files = dir.snapshot();
        let f = FaultDir::default();
        {
            let mut s = f.lock();
            s.durable = files.clone();
            s.current = files;
        }
        f
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Dies at operation number `op` (counted from now, 0 is the next one); if it is a write,
    /// its first `torn` bytes are written.
    pub fn crash_at(&self, op: u64, torn: usize) {
        let mut s = self.lock();
        s.crash_at = Some((s.ops + op, torn));
    }

    /// Operations done so far (to plan a crash at each of them).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Whether the injected crash happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// The writes done since operation `from`: operation number, file and size (to plan a
    /// crash inside each of them, torn at every byte).
    pub fn writes_since(&self, from: u64) -> Vec<(u64, String, usize)> {
        self.lock()
            .writes
            .iter()
            .filter(|(op, _, _)| *op >= from)
            .cloned()
            .collect()
    }

    /// The files after a power cut now: the durable ones plus what `persist` keeps of the
    /// writes not synced.
    pub fn power_cut(&self, persist: Persist) -> MemDir {
        let s = self.lock();
        let mut files = s.durable.clone();
        let mut rng = match persist {
            Persist::Seeded(seed) => seed ^ 0x9E37_79B9_7F4A_7C15,
            _ => 0,
        };
        for (name, offset, data) in &s.pending {
            let keep = match persist {
                Persist::Nothing => 0,
                Persist::Everything => data.len(),
                Persist::Seeded(_) => match splitmix(&mut rng) % 3 {
                    0 => 0,
                    1 => data.len(),
                    _ => (splitmix(&mut rng) % (data.len() as u64 + 1)) as usize,
                },
            };
            if keep > 0
                && let Some(f) = files.get_mut(name)
            {
                f.write_at(*offset, &data[..keep]);
            }
        }
        MemDir::from_files(files)
    }

    /// Counts an operation; `Err` when the process is dead, `Ok(Some(torn))` when this is the
    /// crashing one.
    fn step(s: &mut State) -> io::Result<Option<usize>> {
        if s.crashed {
            return Err(died());
        }
        let op = s.ops;
        s.ops += 1;
        match s.crash_at {
            Some((at, torn)) if at == op => {
                s.crashed = true;
                Ok(Some(torn))
            }
            _ => Ok(None),
        }
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Dir for FaultDir {
    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        let s = self.lock();
        if s.crashed {
            return Err(died());
        }
        Ok(s.current.get(name).map(|f| f.len))
    }

    fn reserve(&self, name: &str, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        if FaultDir::step(&mut s)?.is_some() {
            return Err(died());
        }
        // Reserving is durable at once (fallocate, then fsync of file and directory).
        let state = &mut *s;
        for files in [&mut state.durable, &mut state.current] {
            let f = files.entry(name.to_owned()).or_default();
            f.len = f.len.max(len);
        }
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = self.lock();
        if s.crashed {
            return Err(died());
        }
        s.current
            .get(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))?
            .read_at(offset, buf)
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        let op = s.ops;
        let torn = FaultDir::step(&mut s)?;
        s.writes.push((op, name.to_owned(), data.len()));
        let f = s
            .current
            .get_mut(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))?;
        if offset + data.len() as u64 > f.len {
            return Err(io::Error::other(format!("write past the end of {name}")));
        }
        let keep = torn.map_or(data.len(), |t| t.min(data.len()));
        f.write_at(offset, &data[..keep]);
        s.pending
            .push((name.to_owned(), offset, data[..keep].to_vec()));
        if torn.is_some() {
            return Err(died());
        }
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut s = self.lock();
        if FaultDir::step(&mut s)?.is_some() {
            return Err(died());
        }
        let pending = std::mem::take(&mut s.pending);
        for (n, offset, data) in pending {
            if n == name {
                if let Some(f) = s.durable.get_mut(&n) {
                    f.write_at(offset, &data);
                }
            } else {
                s.pending.push((n, offset, data));
            }
        }
        Ok(())
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let s = self.lock();
        if s.crashed {
            return Err(died());
        }
        Ok(s.current.get(name).map(MemFile::to_vec))
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        // Dying inside an atomic replacement leaves the old file (the rename did not happen).
        if FaultDir::step(&mut s)?.is_some() {
            return Err(died());
        }
        s.pending.retain(|(n, _, _)| n != name);
        let f = MemFile::from_bytes(data);
        s.durable.insert(name.to_owned(), f.clone());
        s.current.insert(name.to_owned(), f);
        Ok(())
    }

    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from("fault:").join(name)
    }
}
