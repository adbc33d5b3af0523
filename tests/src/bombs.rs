//! Decompression bombs for the image-limit tests, built in code (no binary
//! fixtures): a PNG that only *declares* huge dimensions, and a real PNG that
//! inflates to a huge image. PNG layout from the PNG specification (W3C,
//! <https://www.w3.org/TR/png-3/>, §5.3 chunk layout, §11.2.1 IHDR).

use std::sync::OnceLock;

/// The PNG signature (§5.2).
const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// One PNG chunk: length, type, data, CRC-32 over type and data (§5.3).
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend(u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.finalize().to_be_bytes());
    out
}

/// A 225-byte, well-formed PNG (correct CRCs, IHDR, IDAT, IEND) whose IHDR
/// declares `width` × `height` 8-bit RGBA pixels. Its IDAT is the start of a
/// zlib stream of zero rows, so a decoder would begin inflating it; the
/// header-only checks must refuse it before any decoder sees it.
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    /// Total length, bytes: the size reported by the black-box test of issue 11.
    const TOTAL: usize = 225;
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    // Bit depth 8, colour type 6 (RGBA), deflate, adaptive filtering, no interlace.
    ihdr.extend([8, 6, 0, 0, 0]);
    let mut out = SIGNATURE.to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    let idat_len = TOTAL - out.len() - 12 - 12;
    // zlib header (deflate, 32 K window, default level), then a stored
    // (uncompressed) deflate block of zero bytes, cut where the file ends.
    let mut idat = vec![0x78, 0x9c, 0x00, 0xff, 0xff, 0x00, 0x00];
    idat.resize(idat_len, 0);
    out.extend(chunk(b"IDAT", &idat));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// Side of [`png_inflating`]'s image, pixels.
pub const INFLATING_SIDE: u32 = 24_000;

/// A real, complete PNG of [`INFLATING_SIDE`]² 1-bit grayscale pixels, all
/// black: about 120 KB on disk (the `png` crate's best deflate level; issue
/// 11's 70 KB file came from a zlib that packs runs of zeros harder), 72 MB
/// of scanlines once inflated (576 megapixels; 2.3 GB as RGBA). Encoded once
/// per test process and cached.
pub fn png_inflating() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| encode_black(INFLATING_SIDE))
}

#[expect(
    clippy::expect_used,
    reason = "test data: the encoder writing to memory cannot fail on valid parameters"
)]
fn encode_black(side: u32) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        encoder.set_compression(png::Compression::High);
        let mut writer = encoder.write_header().expect("png header");
        let mut stream = writer.stream_writer().expect("png stream");
        let row = vec![0_u8; side.div_ceil(8) as usize];
        for _ in 0..side {
            stream.write_all(&row).expect("png row");
        }
        stream.finish().expect("png end");
    }
    out
}

/// `bytes` as a `data:image/png;base64,…` URI.
pub fn png_data_uri(bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declaring_png_is_225_bytes_and_declares_its_size() {
        let png = png_declaring(50_000, 50_000);
        assert_eq!(png.len(), 225);
        assert!(png.starts_with(SIGNATURE));
        assert_eq!(&png[16..24], &[0, 0, 0xc3, 0x50, 0, 0, 0xc3, 0x50]);
        assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
    }

    #[test]
    fn the_inflating_png_is_small_and_really_that_large() {
        let png = png_inflating();
        assert!(png.len() < 150_000, "{} bytes", png.len());
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (INFLATING_SIDE, INFLATING_SIDE));
        // Every scanline is there: it really inflates to the declared size.
        let mut rows = 0;
        while let Some(row) = reader.next_row().unwrap() {
            assert_eq!(row.data().len(), INFLATING_SIDE.div_ceil(8) as usize);
            rows += 1;
        }
        assert_eq!(rows, INFLATING_SIDE);
    }
}
