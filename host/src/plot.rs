//! Minimal line charts as PNG files (no dependencies): axes, one colour per series, and the
//! axis ranges written in a 3×5 pixel font. Good enough to glance at a loss curve.

use std::path::Path;

const W: usize = 640;
const H: usize = 400;
const MARGIN: usize = 40;
const COLORS: [[u8; 3]; 4] = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];

/// 3×5 glyphs for digits, '.', '-', 'e' (rows top to bottom, 3 bits each).
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => return None,
    })
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for k in 0..=n {
            let t = k as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            self.set(x.round() as i64, y.round() as i64, c);
            self.set(x.round() as i64, y.round() as i64 + 1, c);
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str) {
        for (k, ch) in s.chars().enumerate() {
            if let Some(g) = glyph(ch) {
                for (row, bits) in g.iter().enumerate() {
                    for col in 0..3 {
                        if bits >> (2 - col) & 1 == 1 {
                            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                                self.set(
                                    x + k as i64 * 8 + col * 2 + dx,
                                    y + row as i64 * 2 + dy,
                                    [0, 0, 0],
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// PNG bytes of an RGB image, with zlib "stored" (uncompressed) deflate blocks.
fn encode_png(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity((w * 3 + 1) * h);
    for row in rgb.chunks(w * 3) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    let mut z = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, c) in chunks.iter().enumerate() {
        z.push((i + 1 == chunks.len()) as u8);
        z.extend_from_slice(&(c.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
        z.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    png
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

/// Draw each series (x, y) in its own colour on shared axes and write a PNG to `out`
/// (via a temporary file). Series colours: blue, orange, green, red, in order.
pub fn line_chart(
    out: &Path,
    _title: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> std::io::Result<()> {
    let pts = series
        .iter()
        .flat_map(|(_, s)| s.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let mut c = Canvas {
        px: vec![255; W * H * 3],
    };
    let (left, right, top, bottom) = (
        MARGIN as f64 + 40.0,
        (W - MARGIN) as f64,
        MARGIN as f64,
        (H - MARGIN) as f64,
    );
    let gray = [120, 120, 120];
    c.line((left, top), (left, bottom), gray);
    c.line((left, bottom), (right, bottom), gray);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * (right - left);
    let sy = |y: f64| bottom - (y - y0) / (y1 - y0) * (bottom - top);
    for (k, (_, s)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        for w in s.windows(2) {
            c.line((sx(w[0].0), sy(w[0].1)), (sx(w[1].0), sy(w[1].1)), color);
        }
        if s.len() == 1 {
            c.line(
                (sx(s[0].0) - 2.0, sy(s[0].1)),
                (sx(s[0].0) + 2.0, sy(s[0].1)),
                color,
            );
        }
    }
    c.text(4, top as i64, &label(y1));
    c.text(4, bottom as i64 - 10, &label(y0));
    c.text(left as i64, bottom as i64 + 8, &label(x0));
    c.text(right as i64 - 40, bottom as i64 + 8, &label(x1));
    let tmp = out.with_extension("png.tmp");
    std::fs::write(&tmp, encode_png(&c.px, W, H))?;
    std::fs::rename(&tmp, out)
}
