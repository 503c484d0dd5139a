//! IDX files (the MNIST format), raw or gzipped.
//!
//! Layout: a big-endian u32 magic `0x0000_08NN` (type 0x08 = unsigned byte, NN = number of
//! dimensions), NN big-endian u32 sizes, then the bytes. Images have three dimensions
//! (count, rows, columns), labels one.

use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Magic of an unsigned-byte IDX file with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an unsigned-byte IDX file with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest decompressed size accepted (guards against gzip bombs and absurd headers).
pub const MAX_BYTES: usize = 1 << 31;

/// Images read from an IDX file: `count` rows of `rows * cols` pixels scaled to [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// Row-major pixels, `count * rows * cols` values in [0, 1].
    pub pixels: Vec<f32>,
    /// Number of images.
    pub count: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

/// Reads a whole file, inflating it if it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|err| Error::Io {
        path: path.into(),
        err,
    })?;
    inflate_if_gz(raw, &path.display().to_string())
}

/// Inflates `bytes` if they start with the gzip magic `1f 8b`, else returns them unchanged.
pub fn inflate_if_gz(bytes: Vec<u8>, source_name: &str) -> Result<Vec<u8>> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|err| Error::Gzip {
                source_name: source_name.into(),
                err,
            })?;
        if out.len() > MAX_BYTES {
            return Err(Error::BadHeader {
                source_name: source_name.into(),
                offset: 0,
                what: "decompressed size",
                found: out.len() as u64,
                expected: format!("at most {MAX_BYTES} bytes"),
            });
        }
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn be_u32(bytes: &[u8], offset: usize, name: &str) -> Result<u32> {
    match bytes.get(offset..offset + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Error::Truncated {
            source_name: name.into(),
            offset: bytes.len(),
            expected: offset + 4,
            found: bytes.len(),
        }),
    }
}

/// Checks magic and returns the dimensions and the payload offset.
fn header<const N: usize>(
    bytes: &[u8],
    name: &str,
    magic: u32,
    what: &'static str,
) -> Result<([usize; N], usize)> {
    if bytes.is_empty() {
        return Err(Error::Empty {
            source_name: name.into(),
            expected: what,
        });
    }
    let found = be_u32(bytes, 0, name)?;
    if found != magic {
        return Err(Error::BadMagic {
            source_name: name.into(),
            found,
            expected: magic,
            what,
        });
    }
    let mut dims = [0usize; N];
    for (i, d) in dims.iter_mut().enumerate() {
        let off = 4 + 4 * i;
        let v = be_u32(bytes, off, name)? as usize;
        if v == 0 {
            return Err(Error::BadHeader {
                source_name: name.into(),
                offset: off,
                what: "dimension",
                found: 0,
                expected: "at least 1".into(),
            });
        }
        *d = v;
    }
    let header_len = 4 + 4 * N;
    let payload = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&p| p <= MAX_BYTES);
    let Some(payload) = payload else {
        return Err(Error::BadHeader {
            source_name: name.into(),
            offset: 4,
            what: "payload size",
            found: dims.iter().map(|&d| d as u64).product(),
            expected: format!("at most {MAX_BYTES} bytes"),
        });
    };
    let end = header_len + payload;
    if bytes.len() < end {
        return Err(Error::Truncated {
            source_name: name.into(),
            offset: bytes.len(),
            expected: end,
            found: bytes.len(),
        });
    }
    if bytes.len() > end {
        return Err(Error::TrailingBytes {
            source_name: name.into(),
            offset: end,
            extra: bytes.len() - end,
        });
    }
    Ok((dims, header_len))
}

/// Parses IDX image bytes (already inflated); pixels are scaled to [0, 1].
pub fn parse_images(bytes: &[u8], source_name: &str) -> Result<Images> {
    let ([count, rows, cols], start) = header::<3>(
        bytes,
        source_name,
        IMAGES_MAGIC,
        "IDX images (magic 0x00000803)",
    )?;
    let mut pixels = crate::large::vec_with_capacity(bytes.len() - start);
    pixels.extend(bytes[start..].iter().map(|&b| pixel(b)));
    Ok(Images {
        pixels,
        count,
        rows,
        cols,
    })
}

/// A pixel byte as a feature in `[0, 1]`: the byte over 255. The one place this scaling is
/// written: a dataset's floats and the rows it copies from its bytes must be the same
/// ([`pixel_fused`] is the same function, for vector code).
#[inline(always)]
pub(crate) fn pixel(b: u8) -> f32 {
    f32::from(b) / 255.0
}

/// [`pixel`] without a division, for code compiled with fused multiply-adds (a kernel path):
/// the product by the rounded reciprocal, off by an ulp for 126 of the 256 bytes, then one
/// correction from its residual, exact by a fused multiply-add. Every byte gives [`pixel`]'s
/// float (test `pixel_fused_is_pixel`, all 256).
///
/// PERF: vector division took 42% of copying a minibatch's rows (Intel Xeon, AVX-512); the
/// multiply and two fused multiply-adds take a fraction of it. Without FMA instructions,
/// `mul_add` is a library call, so the bulk conversion of a loaded dataset keeps [`pixel`].
#[inline(always)]
pub(crate) fn pixel_fused(b: u8) -> f32 {
    const RECIPROCAL: f32 = 1.0 / 255.0;
    let x = f32::from(b);
    let q = x * RECIPROCAL;
    let residual = (-q).mul_add(255.0, x);
    residual.mul_add(RECIPROCAL, q)
}

#[cfg(test)]
mod tests {
    /// Every byte's feature is the same float by either function.
    #[test]
    fn pixel_fused_is_pixel() {
        for b in 0..=255u8 {
            let (fused, plain) = (super::pixel_fused(b), super::pixel(b));
            assert_eq!(fused.to_bits(), plain.to_bits(), "byte {b}");
        }
    }
}

/// Pixels of an IDX image file as stored, one byte each: `count` rows of `rows * cols`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBytes {
    /// Row-major pixel bytes, `count * rows * cols` of them.
    pub bytes: Vec<u8>,
    /// Number of images.
    pub count: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

/// Parses IDX image bytes (already inflated) without scaling them: the header is checked as
/// [`parse_images`] checks it, then removed in place.
pub fn parse_image_bytes(mut bytes: Vec<u8>, source_name: &str) -> Result<ImageBytes> {
    let ([count, rows, cols], start) = header::<3>(
        &bytes,
        source_name,
        IMAGES_MAGIC,
        "IDX images (magic 0x00000803)",
    )?;
    bytes.drain(..start);
    Ok(ImageBytes {
        bytes,
        count,
        rows,
        cols,
    })
}

/// Reads an IDX image file, raw or gzipped, as its pixel bytes ([`parse_image_bytes`]).
pub fn read_image_bytes(path: &Path) -> Result<ImageBytes> {
    parse_image_bytes(read_maybe_gz(path)?, &path.display().to_string())
}

/// Parses IDX label bytes (already inflated), checking every label is below `n_classes`.
pub fn parse_labels(bytes: &[u8], source_name: &str, n_classes: usize) -> Result<Vec<u32>> {
    let ([_count], start) = header::<1>(
        bytes,
        source_name,
        LABELS_MAGIC,
        "IDX labels (magic 0x00000801)",
    )?;
    bytes[start..]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (b as usize) < n_classes {
                Ok(u32::from(b))
            } else {
                Err(Error::LabelOutOfRange {
                    source_name: source_name.into(),
                    offset: start + i,
                    label: u32::from(b),
                    n_classes,
                })
            }
        })
        .collect()
}

/// Reads an IDX image file, raw or gzipped.
pub fn read_images(path: &Path) -> Result<Images> {
    parse_images(&read_maybe_gz(path)?, &path.display().to_string())
}

/// Reads an IDX label file, raw or gzipped.
pub fn read_labels(path: &Path, n_classes: usize) -> Result<Vec<u32>> {
    parse_labels(
        &read_maybe_gz(path)?,
        &path.display().to_string(),
        n_classes,
    )
}

/// Encodes images (pixel bytes) as IDX; used to write test fixtures.
pub fn encode_images(pixels: &[u8], count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC, count, rows, cols] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Encodes labels as IDX; used to write test fixtures.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}
