//! Request bodies (and fetched content) held in memory up to a threshold and in an unnamed
//! temporary file past it, read with a size limit and an idle timeout, and replayable: every
//! [`Spooled::stream`] starts again from the first byte, so a body can be sent to one replica after
//! another.
//!
//! Invariant: at most `in_memory` bytes of one body are ever in memory (plus one chunk in flight);
//! the file has no name on disk (the OS frees it when the last handle closes, crash included);
//! nothing past `max_bytes` is read, and a declared length over it is refused before reading.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};

/// How a body is read.
#[derive(Debug, Clone)]
pub struct SpoolLimits {
    /// Largest body; more is [`SpoolError::TooLarge`].
    pub max_bytes: u64,
    /// Bodies up to this size stay in memory; larger ones go to a temporary file.
    pub in_memory: usize,
    /// Longest wait for the next chunk.
    pub idle: Duration,
    /// Where large bodies go; `None`: the system's temporary directory.
    pub dir: Option<std::path::PathBuf>,
}

/// Why a body could not be read; `E` is the error of the chunks' source.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError<E> {
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no part of the body arrived for {} s", .0.as_secs_f64())]
    Idle(Duration),
    #[error("the body could not be read: {0}")]
    Read(E),
    #[error("the body could not be kept: {0}")]
    Io(std::io::Error),
}

impl<E> From<std::io::Error> for SpoolError<E> {
    fn from(e: std::io::Error) -> Self {
        SpoolError::Io(e)
    }
}

/// A body read to its end.
#[derive(Debug, Clone)]
pub struct Spooled {
    len: u64,
    data: Data,
}

#[derive(Debug, Clone)]
enum Data {
    Memory(Bytes),
    File(Arc<File>),
}

/// Chunks read back from a file.
const READ_CHUNK: usize = 256 * 1024;

/// Reads `chunks` to their end within `limits`; `declared` is the length the sender announced
/// (refused at once when over the limit; never trusted for allocation).
pub async fn spool<S, E>(chunks: S, declared: Option<u64>, limits: &SpoolLimits) -> Result<Spooled, SpoolError<E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let too_large = || SpoolError::TooLarge { limit: limits.max_bytes };
    if declared.is_some_and(|n| n > limits.max_bytes) {
        return Err(too_large());
    }
    let mut chunks = chunks;
    let mut memory: Vec<u8> = Vec::new();
    let mut file: Option<File> = None;
    let mut len: u64 = 0;
    loop {
        let next = tokio::time::timeout(limits.idle, chunks.next()).await.map_err(|_| SpoolError::Idle(limits.idle))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(SpoolError::Read)?;
        len += chunk.len() as u64;
        if len > limits.max_bytes {
            return Err(too_large());
        }
        match file.as_mut() {
            Some(f) => write_blocking(f, chunk).await?,
            None if memory.len() + chunk.len() <= limits.in_memory => memory.extend_from_slice(&chunk),
            None => {
                // Past the threshold: what was kept so far and this chunk go to the file.
                let dir = limits.dir.clone();
                let make = move || match dir {
                    Some(dir) => tempfile::tempfile_in(dir),
                    None => tempfile::tempfile(),
                };
                let mut f = tokio::task::spawn_blocking(make).await.map_err(join_error)??;
                write_blocking(&mut f, Bytes::from(std::mem::take(&mut memory))).await?;
                write_blocking(&mut f, chunk).await?;
                file = Some(f);
            }
        }
    }
    let data = match file {
        Some(f) => Data::File(Arc::new(f)),
        None => {
            // Growth by doubling may have left up to as much again unused: not kept for the wait.
            memory.shrink_to_fit();
            Data::Memory(Bytes::from(memory))
        }
    };
    Ok(Spooled { len, data })
}

fn join_error(e: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Appends `chunk` to the file on the blocking pool.
async fn write_blocking(file: &mut File, chunk: Bytes) -> std::io::Result<()> {
    let mut handle = file.try_clone()?;
    tokio::task::spawn_blocking(move || handle.write_all(&chunk)).await.map_err(join_error)?
}

impl Spooled {
    /// A body held in memory.
    pub fn from_bytes(bytes: Bytes) -> Spooled {
        Spooled { len: bytes.len() as u64, data: Data::Memory(bytes) }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the body went to a temporary file.
    pub fn is_on_disk(&self) -> bool {
        matches!(self.data, Data::File(_))
    }

    /// The body when it is in memory (`None` when it went to a file).
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.data {
            Data::Memory(bytes) => Some(bytes),
            Data::File(_) => None,
        }
    }

    /// A blocking reader of the body from its first byte (for decoders that seek); readers are
    /// independent of each other and of [`Spooled::stream`].
    pub fn reader(&self) -> SpoolReader {
        SpoolReader { data: self.data.clone(), len: self.len, at: 0 }
    }

    /// The body from its first byte, in chunks; each call starts again (reads are positional, so
    /// streams never disturb each other).
    pub fn stream(&self) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let data = self.data.clone();
        let len = self.len;
        futures_util::stream::try_unfold(0u64, move |at| {
            let data = data.clone();
            async move {
                if at >= len {
                    return Ok(None);
                }
                let chunk = match data {
                    Data::Memory(bytes) => bytes.slice(at as usize..),
                    Data::File(file) => {
                        let n = (len - at).min(READ_CHUNK as u64) as usize;
                        tokio::task::spawn_blocking(move || {
                            let mut buf = vec![0u8; n];
                            file.read_exact_at(&mut buf, at)?;
                            Ok::<_, std::io::Error>(Bytes::from(buf))
                        })
                        .await
                        .map_err(join_error)??
                    }
                };
                let next = at + chunk.len() as u64;
                Ok(Some((chunk, next)))
            }
        })
    }
}

/// A spooled body read with `std::io::Read` and `Seek` (positional reads: no shared cursor).
#[derive(Debug, Clone)]
pub struct SpoolReader {
    data: Data,
    len: u64,
    at: u64,
}

impl std::io::Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min((self.len - self.at) as usize);
        let n = match &self.data {
            Data::Memory(bytes) => {
                let start = self.at as usize;
                buf[..n].copy_from_slice(&bytes[start..start + n]);
                n
            }
            Data::File(file) => file.read_at(&mut buf[..n], self.at)?,
        };
        self.at += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for SpoolReader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.at.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the first byte"))?;
        self.at = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, in_memory: usize) -> SpoolLimits {
        SpoolLimits { max_bytes, in_memory, idle: Duration::from_secs(5), dir: None }
    }

    fn chunks(data: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        let parts: Vec<_> = data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures_util::stream::iter(parts)
    }

    async fn collect(spooled: &Spooled) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stream = std::pin::pin!(spooled.stream());
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_small_body_stays_in_memory() {
        let body = data(1000);
        let spooled = spool(chunks(&body, 100), Some(1000), &limits(10_000, 4096)).await.unwrap();
        assert!(!spooled.is_on_disk());
        assert_eq!(spooled.len(), 1000);
        assert_eq!(spooled.as_bytes().map(|b| b.to_vec()), Some(body.clone()));
        assert_eq!(collect(&spooled).await, body);
    }

    #[tokio::test]
    async fn a_large_body_goes_to_a_file_and_replays_from_the_start() {
        let body = data(1_000_003);
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits { dir: Some(dir.path().to_owned()), ..limits(2_000_000, 100_000) };
        let spooled = spool(chunks(&body, 65_536), None, &limits).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the file has no name");
        assert!(spooled.is_on_disk());
        assert_eq!(spooled.as_bytes(), None);
        assert_eq!(spooled.len(), body.len() as u64);
        // Twice, and two at once: a retry sends the same bytes.
        let (a, b) = tokio::join!(collect(&spooled), collect(&spooled));
        assert_eq!(a, body);
        assert_eq!(b, body);
        assert_eq!(collect(&spooled.clone()).await, body);
    }

    #[tokio::test]
    async fn readers_read_and_seek_the_same_bytes_from_memory_and_from_a_file() {
        use std::io::{Read, Seek, SeekFrom};

        let body = data(300_001);
        for in_memory in [1_000_000, 1_000] {
            let spooled = spool(chunks(&body, 65_536), None, &limits(1_000_000, in_memory)).await.unwrap();
            assert_eq!(spooled.is_on_disk(), in_memory < body.len());
            let mut reader = spooled.reader();
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            assert_eq!(all, body);
            let mut other = spooled.reader();
            assert_eq!(other.seek(SeekFrom::End(-10)).unwrap(), 299_991);
            let mut tail = Vec::new();
            other.read_to_end(&mut tail).unwrap();
            assert_eq!(tail, body[299_991..]);
            assert_eq!(reader.seek(SeekFrom::Current(-5)).unwrap(), 299_996);
            let mut five = [0u8; 8];
            assert_eq!(reader.read(&mut five).unwrap(), 5);
            assert_eq!(&five[..5], &body[299_996..]);
            assert!(reader.seek(SeekFrom::Current(-400_000)).is_err());
            assert_eq!(reader.seek(SeekFrom::Start(400_000)).unwrap(), 400_000);
            assert_eq!(reader.read(&mut five).unwrap(), 0, "past the end reads nothing");
        }
    }

    #[tokio::test]
    async fn the_limit_holds_for_declared_and_actual_lengths() {
        let body = data(5000);
        let declared = spool(chunks(&body, 100), Some(5000), &limits(4999, 100)).await;
        assert!(matches!(declared, Err(SpoolError::TooLarge { limit: 4999 })), "{declared:?}");
        // A sender that declares less than it sends is cut at the limit too.
        let actual = spool(chunks(&body, 100), Some(10), &limits(4999, 100)).await;
        assert!(matches!(actual, Err(SpoolError::TooLarge { .. })), "{actual:?}");
        assert_eq!(spool(chunks(&body, 100), None, &limits(5000, 100)).await.unwrap().len(), 5000);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_and_a_broken_one_is_a_read_error() {
        let stalled = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let limits = SpoolLimits { max_bytes: 100, in_memory: 100, idle: Duration::from_millis(50), dir: None };
        assert!(matches!(spool(stalled, None, &limits).await, Err(SpoolError::Idle(_))));
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let error = spool(broken, None, &limits).await.unwrap_err();
        assert_eq!(error.to_string(), "the body could not be read: connection reset");
    }

    #[tokio::test]
    async fn an_empty_body_is_empty() {
        let spooled = spool(chunks(&[], 1), Some(0), &limits(10, 10)).await.unwrap();
        assert!(spooled.is_empty());
        assert!(collect(&spooled).await.is_empty());
    }
}
