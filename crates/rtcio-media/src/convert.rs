//! Pixel format conversion (through the SIMD `yuv` crate) and scaling (through
//! `fast_image_resize`): camera and screen formats → I420, I420 → RGBA, resize to a requested
//! size. All YUV is BT.601 limited range, what OpenH264 and browsers assume without VUI.

use std::time::Duration;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use yuv::{
    BufferStoreMut, YuvBiPlanarImage, YuvConversionMode, YuvPackedImage, YuvPlanarImage,
    YuvPlanarImageMut, YuvRange, YuvStandardMatrix,
};

use crate::error::{MediaError, Result};
use crate::frame::{I420Frame, RgbaFrame, check_dimensions};

const RANGE: YuvRange = YuvRange::Limited;
const MATRIX: YuvStandardMatrix = YuvStandardMatrix::Bt601;

fn conv_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Convert(e.to_string())
}

fn check_buffer(len: usize, needed: usize, what: &str) -> Result<()> {
    if len < needed {
        return Err(MediaError::InvalidInput(format!(
            "{what} buffer has {len} bytes, needs {needed}"
        )));
    }
    Ok(())
}

fn packed_i420(width: u32, height: u32, timestamp: Duration) -> Result<I420Frame> {
    let mut frame = I420Frame::black(width, height)?;
    frame.timestamp = timestamp;
    Ok(frame)
}

/// Runs `f` with a mutable `yuv` view of a packed frame's planes.
fn with_planes_mut<T>(
    frame: &mut I420Frame,
    f: impl FnOnce(&mut YuvPlanarImageMut<'_, u8>) -> Result<T>,
) -> Result<T> {
    let mut image = YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(&mut frame.y),
        y_stride: frame.stride_y as u32,
        u_plane: BufferStoreMut::Borrowed(&mut frame.u),
        u_stride: frame.stride_u as u32,
        v_plane: BufferStoreMut::Borrowed(&mut frame.v),
        v_stride: frame.stride_v as u32,
        width: frame.width,
        height: frame.height,
    };
    f(&mut image)
}

fn planes(frame: &I420Frame) -> YuvPlanarImage<'_, u8> {
    YuvPlanarImage {
        y_plane: &frame.y,
        y_stride: frame.stride_y as u32,
        u_plane: &frame.u,
        u_stride: frame.stride_u as u32,
        v_plane: &frame.v,
        v_stride: frame.stride_v as u32,
        width: frame.width,
        height: frame.height,
    }
}

/// Converts I420 to RGBA into `out`, resizing `out`'s buffer if needed.
pub fn i420_to_rgba_into(frame: &I420Frame, out: &mut RgbaFrame) -> Result<()> {
    frame.validate()?;
    let needed = frame.width as usize * frame.height as usize * 4;
    out.data.resize(needed, 0);
    out.width = frame.width;
    out.height = frame.height;
    out.timestamp = frame.timestamp;
    yuv::yuv420_to_rgba(
        &planes(frame),
        &mut out.data,
        frame.width * 4,
        RANGE,
        MATRIX,
    )
    .map_err(conv_err)
}

/// Converts I420 to a new RGBA frame.
pub fn i420_to_rgba(frame: &I420Frame) -> Result<RgbaFrame> {
    let mut out = RgbaFrame {
        width: frame.width,
        height: frame.height,
        data: Vec::new(),
        timestamp: frame.timestamp,
    };
    i420_to_rgba_into(frame, &mut out)?;
    Ok(out)
}

/// Converts RGBA (`width * 4` bytes per row) to I420.
pub fn rgba_to_i420(
    rgba: &[u8],
    width: u32,
    height: u32,
    timestamp: Duration,
) -> Result<I420Frame> {
    check_dimensions(width, height)?;
    check_buffer(rgba.len(), width as usize * height as usize * 4, "RGBA")?;
    let mut frame = packed_i420(width, height, timestamp)?;
    with_planes_mut(&mut frame, |img| {
        yuv::rgba_to_yuv420(
            img,
            rgba,
            width * 4,
            RANGE,
            MATRIX,
            YuvConversionMode::Balanced,
        )
        .map_err(conv_err)
    })?;
    Ok(frame)
}

/// Converts BGRA/BGRX (what X11 screen capture gives) with the given row stride to I420.
pub fn bgra_to_i420(
    bgra: &[u8],
    stride: u32,
    width: u32,
    height: u32,
    timestamp: Duration,
) -> Result<I420Frame> {
    check_dimensions(width, height)?;
    check_buffer(
        bgra.len(),
        stride as usize * (height as usize - 1) + width as usize * 4,
        "BGRA",
    )?;
    let mut frame = packed_i420(width, height, timestamp)?;
    with_planes_mut(&mut frame, |img| {
        yuv::bgra_to_yuv420(
            img,
            bgra,
            stride,
            RANGE,
            MATRIX,
            YuvConversionMode::Balanced,
        )
        .map_err(conv_err)
    })?;
    Ok(frame)
}

/// Converts packed RGB (`width * 3` bytes per row, decoded MJPEG) to I420.
pub fn rgb_to_i420(rgb: &[u8], width: u32, height: u32, timestamp: Duration) -> Result<I420Frame> {
    check_dimensions(width, height)?;
    check_buffer(rgb.len(), width as usize * height as usize * 3, "RGB")?;
    let mut frame = packed_i420(width, height, timestamp)?;
    with_planes_mut(&mut frame, |img| {
        yuv::rgb_to_yuv420(
            img,
            rgb,
            width * 3,
            RANGE,
            MATRIX,
            YuvConversionMode::Balanced,
        )
        .map_err(conv_err)
    })?;
    Ok(frame)
}

/// Converts packed BGR (`width * 3` bytes per row) to I420.
pub fn bgr_to_i420(bgr: &[u8], width: u32, height: u32, timestamp: Duration) -> Result<I420Frame> {
    check_dimensions(width, height)?;
    check_buffer(bgr.len(), width as usize * height as usize * 3, "BGR")?;
    let mut frame = packed_i420(width, height, timestamp)?;
    with_planes_mut(&mut frame, |img| {
        yuv::bgr_to_yuv420(
            img,
            bgr,
            width * 3,
            RANGE,
            MATRIX,
            YuvConversionMode::Balanced,
        )
        .map_err(conv_err)
    })?;
    Ok(frame)
}

/// Converts packed YUYV 4:2:2 (the usual uncompressed webcam format) to I420.
pub fn yuyv_to_i420(
    yuyv: &[u8],
    width: u32,
    height: u32,
    timestamp: Duration,
) -> Result<I420Frame> {
    check_dimensions(width, height)?;
    check_buffer(yuyv.len(), width as usize * height as usize * 2, "YUYV")?;
    let mut frame = packed_i420(width, height, timestamp)?;
    let packed = YuvPackedImage {
        yuy: yuyv,
        yuy_stride: width * 2,
        width,
        height,
    };
    with_planes_mut(&mut frame, |img| {
        yuv::yuyv422_to_yuv420(img, &packed).map_err(conv_err)
    })?;
    Ok(frame)
}

/// Converts NV12 (Y plane then interleaved UV) to I420, through RGBA (the `yuv` crate has no
/// direct NV12 → I420 path; both steps are SIMD).
pub fn nv12_to_i420(
    nv12: &[u8],
    width: u32,
    height: u32,
    timestamp: Duration,
) -> Result<I420Frame> {
    check_dimensions(width, height)?;
    let luma = width as usize * height as usize;
    check_buffer(nv12.len(), luma + luma / 2, "NV12")?;
    let bi = YuvBiPlanarImage {
        y_plane: &nv12[..luma],
        y_stride: width,
        uv_plane: &nv12[luma..luma + luma / 2],
        uv_stride: width,
        width,
        height,
    };
    let mut rgba = vec![0u8; luma * 4];
    yuv::yuv_nv12_to_rgba(
        &bi,
        &mut rgba,
        width * 4,
        RANGE,
        MATRIX,
        YuvConversionMode::Balanced,
    )
    .map_err(conv_err)?;
    rgba_to_i420(&rgba, width, height, timestamp)
}

/// Converts 8-bit greyscale to I420 (neutral chroma).
pub fn gray_to_i420(
    gray: &[u8],
    width: u32,
    height: u32,
    timestamp: Duration,
) -> Result<I420Frame> {
    check_dimensions(width, height)?;
    let luma = width as usize * height as usize;
    check_buffer(gray.len(), luma, "grey")?;
    let mut frame = packed_i420(width, height, timestamp)?;
    frame.y.copy_from_slice(&gray[..luma]);
    Ok(frame)
}

/// The largest even size with the source's aspect ratio that fits in `max_w × max_h`.
pub fn fit_within(src_w: u32, src_h: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    if src_w == 0 || src_h == 0 {
        return (2, 2);
    }
    let scale = (f64::from(max_w) / f64::from(src_w)).min(f64::from(max_h) / f64::from(src_h));
    let w = ((f64::from(src_w) * scale) as u32 & !1).max(2);
    let h = ((f64::from(src_h) * scale) as u32 & !1).max(2);
    (w, h)
}

/// Resampling quality of a [`Scaler`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScaleQuality {
    /// Nearest neighbour: fastest, for tiny previews.
    Fast,
    /// Bilinear convolution: the default for previews and encoder input.
    #[default]
    Balanced,
    /// Lanczos3: sharpest, slowest.
    High,
}

/// Resizes I420 and RGBA frames; keeps its scratch buffers between calls.
pub struct Scaler {
    resizer: Resizer,
    options: ResizeOptions,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler").finish_non_exhaustive()
    }
}

impl Default for Scaler {
    fn default() -> Self {
        Self::new(ScaleQuality::default())
    }
}

impl Scaler {
    /// A scaler of the given quality.
    pub fn new(quality: ScaleQuality) -> Self {
        let alg = match quality {
            ScaleQuality::Fast => ResizeAlg::Nearest,
            ScaleQuality::Balanced => ResizeAlg::Convolution(FilterType::Bilinear),
            ScaleQuality::High => ResizeAlg::Convolution(FilterType::Lanczos3),
        };
        Self {
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(alg),
        }
    }

    fn resize_plane(
        &mut self,
        src: &[u8],
        (sw, sh): (u32, u32),
        dst: &mut Vec<u8>,
        (dw, dh): (u32, u32),
        pixel: PixelType,
    ) -> Result<()> {
        let src = ImageRef::new(sw, sh, src, pixel).map_err(conv_err)?;
        dst.resize(dw as usize * dh as usize * pixel.size(), 0);
        let mut dst_img =
            Image::from_slice_u8(dw, dh, dst.as_mut_slice(), pixel).map_err(conv_err)?;
        self.resizer
            .resize(&src, &mut dst_img, &self.options)
            .map_err(conv_err)
    }

    /// Scales an I420 frame to `width × height` (even). Returns a copy when the size matches.
    pub fn scale_i420(&mut self, frame: &I420Frame, width: u32, height: u32) -> Result<I420Frame> {
        check_dimensions(width, height)?;
        frame.validate()?;
        if frame.width == width && frame.height == height {
            return Ok(frame.clone());
        }
        let packed_copy;
        let src = if frame.is_packed() {
            frame
        } else {
            packed_copy = frame.clone().into_packed();
            &packed_copy
        };
        let mut out = packed_i420(width, height, frame.timestamp)?;
        let (sw, sh) = (src.width, src.height);
        self.resize_plane(&src.y, (sw, sh), &mut out.y, (width, height), PixelType::U8)?;
        let (scw, sch) = src.chroma_size();
        let dc = (width / 2, height / 2);
        self.resize_plane(&src.u, (scw, sch), &mut out.u, dc, PixelType::U8)?;
        self.resize_plane(&src.v, (scw, sch), &mut out.v, dc, PixelType::U8)?;
        Ok(out)
    }

    /// Scales an RGBA frame to `width × height`.
    pub fn scale_rgba(&mut self, frame: &RgbaFrame, width: u32, height: u32) -> Result<RgbaFrame> {
        if width == 0 || height == 0 {
            return Err(MediaError::InvalidInput("zero target size".into()));
        }
        let mut out = RgbaFrame {
            width,
            height,
            data: Vec::new(),
            timestamp: frame.timestamp,
        };
        self.resize_plane(
            &frame.data,
            (frame.width, frame.height),
            &mut out.data,
            (width, height),
            PixelType::U8x4,
        )?;
        Ok(out)
    }

    /// Makes a preview: scales the I420 frame to fit in `max_w × max_h` (aspect kept) and
    /// converts it to RGBA. Scaling before conversion keeps the cost proportional to the
    /// preview's size.
    pub fn preview(&mut self, frame: &I420Frame, max_w: u32, max_h: u32) -> Result<RgbaFrame> {
        let (w, h) = fit_within(frame.width, frame.height, max_w, max_h);
        if (w, h) == (frame.width, frame.height) {
            return i420_to_rgba(frame);
        }
        let scaled = self.scale_i420(frame, w, h)?;
        i420_to_rgba(&scaled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgba_round_trip_keeps_colours() {
        let (w, h) = (64, 32);
        let mut rgba = vec![0u8; w * h * 4];
        for (i, px) in rgba.chunks_exact_mut(4).enumerate() {
            let x = i % w;
            px.copy_from_slice(&[if x < w / 2 { 200 } else { 20 }, 100, 50, 255]);
        }
        let yuv = rgba_to_i420(&rgba, w as u32, h as u32, Duration::ZERO).unwrap();
        let back = i420_to_rgba(&yuv).unwrap();
        for (a, b) in rgba.iter().zip(&back.data).step_by(37) {
            assert!((i32::from(*a) - i32::from(*b)).abs() <= 6, "{a} vs {b}");
        }
    }

    #[test]
    fn scale_changes_size() {
        let frame = I420Frame::black(320, 180).unwrap();
        let mut s = Scaler::default();
        let out = s.scale_i420(&frame, 160, 90).unwrap();
        assert_eq!((out.width, out.height), (160, 90));
        assert_eq!(out.y.len(), 160 * 90);
        assert_eq!(out.u.len(), 80 * 45);
        let p = s.preview(&frame, 100, 100).unwrap();
        assert_eq!((p.width, p.height), (100, 56));
        assert_eq!(p.data.len(), 100 * 56 * 4);
    }

    #[test]
    fn short_buffers_are_errors() {
        assert!(rgba_to_i420(&[0; 10], 4, 4, Duration::ZERO).is_err());
        assert!(yuyv_to_i420(&[0; 10], 4, 4, Duration::ZERO).is_err());
        assert!(bgra_to_i420(&[0; 10], 16, 4, 4, Duration::ZERO).is_err());
        assert!(rgba_to_i420(&[0; 48], 3, 4, Duration::ZERO).is_err());
    }
}
