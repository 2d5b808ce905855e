//! Media engine benchmarks: H.264 encode/decode at 720p and 1080p, I420↔RGBA and scaling,
//! Opus encode/decode, and a synthetic source → encode → decode → RGBA pipeline with per-stage
//! latency (printed as a table before the criterion runs).
//!
//! `cargo bench -p rtcio-media` (bench profile: optimised). Short measurement times keep the
//! whole run around two minutes on two cores.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use rtcio_media::convert::{self, Scaler};
use rtcio_media::synthetic::video::unix_micros;
use rtcio_media::{
    AudioFrame, AudioSource, EncodedFrame, H264Config, H264Decoder, H264Encoder, I420Frame,
    OpusConfig, OpusDecoder, OpusEncoder, TestPatternConfig, TestPatternSource, ToneConfig,
    ToneSource, VideoSource, read_marker,
};

const SIZES: [(&str, u32, u32, u32); 2] = [
    ("720p", 1280, 720, 1_500_000),
    ("1080p", 1920, 1080, 3_000_000),
];

fn frames(width: u32, height: u32, n: usize) -> Vec<I420Frame> {
    let mut src = TestPatternSource::new(TestPatternConfig {
        width,
        height,
        fps: 30.0,
        paced: false,
    })
    .expect("pattern");
    (0..n).map(|_| src.next_frame().expect("frame")).collect()
}

fn encoder(bitrate: u32) -> H264Encoder {
    H264Encoder::new(H264Config {
        bitrate_bps: bitrate,
        keyframe_interval: 0,
        ..H264Config::default()
    })
    .expect("encoder")
}

fn encoded_sequence(frames: &[I420Frame], bitrate: u32) -> Vec<EncodedFrame> {
    let mut enc = encoder(bitrate);
    frames
        .iter()
        .filter_map(|f| enc.encode(f).expect("encode"))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs the whole send+receive pipeline frame by frame and prints per-stage latency.
fn pipeline_report() {
    println!("\n## Pipeline: synthetic source -> H.264 encode -> decode -> RGBA (one thread)\n");
    println!("| size | stage | mean ms | p50 ms | p95 ms |\n|---|---|---|---|---|");
    for (name, w, h, bitrate) in SIZES {
        let mut src = TestPatternSource::new(TestPatternConfig {
            width: w,
            height: h,
            fps: 30.0,
            paced: false,
        })
        .expect("pattern");
        let mut enc = encoder(bitrate);
        let mut dec = H264Decoder::new().expect("decoder");
        let mut rgba = rtcio_media::RgbaFrame::new(w, h);
        let mut stages: [Vec<f64>; 5] = Default::default();
        let mut bytes = 0usize;
        let n = 90;
        for _ in 0..n {
            let t0 = Instant::now();
            let frame = src.next_frame().expect("frame");
            let t1 = Instant::now();
            let e = enc.encode(&frame).expect("encode").expect("output");
            bytes += e.data.len();
            let t2 = Instant::now();
            let pic = dec
                .decode(&e.data, e.rtp_timestamp())
                .expect("decode")
                .expect("picture");
            let t3 = Instant::now();
            convert::i420_to_rgba_into(&pic, &mut rgba).expect("rgba");
            let t4 = Instant::now();
            let marker = read_marker(&pic).expect("marker");
            let glass = unix_micros().saturating_sub(marker.capture_time_us) as f64 / 1000.0;
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
            stages[0].push(ms(t0, t1));
            stages[1].push(ms(t1, t2));
            stages[2].push(ms(t2, t3));
            stages[3].push(ms(t3, t4));
            stages[4].push(glass);
        }
        let labels = [
            "source (render)",
            "encode",
            "decode",
            "I420->RGBA",
            "capture->RGBA (marker)",
        ];
        for (label, values) in labels.iter().zip(stages.iter_mut()) {
            values.sort_by(f64::total_cmp);
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            println!(
                "| {name} | {label} | {mean:.2} | {:.2} | {:.2} |",
                percentile(values, 0.5),
                percentile(values, 0.95)
            );
        }
        println!(
            "| {name} | output bitrate | {:.0} kbps at 30 fps (target {} kbps) | | |",
            bytes as f64 * 8.0 / (f64::from(n) / 30.0) / 1000.0,
            bitrate / 1000
        );
    }
    println!();
}

fn bench_h264(c: &mut Criterion) {
    let mut group = c.benchmark_group("h264");
    group.throughput(Throughput::Elements(1));
    for (name, w, h, bitrate) in SIZES {
        let input = frames(w, h, 60);
        let mut enc = encoder(bitrate);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                let out = enc.encode(&input[i % input.len()]).expect("encode");
                i += 1;
                black_box(out)
            })
        });
        let sequence = encoded_sequence(&input, bitrate);
        let mut dec = H264Decoder::new().expect("decoder");
        let mut j = 0;
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                // Restart at the IDR when the sequence ends (decoder state stays valid).
                let e = &sequence[j % sequence.len()];
                j += 1;
                black_box(dec.decode(&e.data, e.rtp_timestamp()).expect("decode"))
            })
        });
    }
    group.finish();
}

fn bench_convert(c: &mut Criterion) {
    let mut group = c.benchmark_group("convert");
    group.throughput(Throughput::Elements(1));
    for (name, w, h, _) in SIZES {
        let frame = frames(w, h, 1).remove(0);
        let mut rgba = rtcio_media::RgbaFrame::new(w, h);
        group.bench_function(BenchmarkId::new("i420_to_rgba", name), |b| {
            b.iter(|| convert::i420_to_rgba_into(black_box(&frame), &mut rgba).expect("rgba"))
        });
        group.bench_function(BenchmarkId::new("rgba_to_i420", name), |b| {
            b.iter(|| {
                convert::rgba_to_i420(black_box(&rgba.data), w, h, Duration::ZERO).expect("i420")
            })
        });
        let mut scaler = Scaler::default();
        group.bench_function(BenchmarkId::new("scale_i420_half", name), |b| {
            b.iter(|| {
                scaler
                    .scale_i420(black_box(&frame), w / 2, h / 2)
                    .expect("scale")
            })
        });
        group.bench_function(BenchmarkId::new("preview_320x180", name), |b| {
            b.iter(|| {
                scaler
                    .preview(black_box(&frame), 320, 180)
                    .expect("preview")
            })
        });
    }
    group.finish();
}

fn bench_opus(c: &mut Criterion) {
    let mut group = c.benchmark_group("opus");
    group.throughput(Throughput::Elements(1));
    for channels in [1u16, 2] {
        let mut tone = ToneSource::new(ToneConfig {
            channels,
            paced: false,
            ..ToneConfig::default()
        })
        .expect("tone");
        let pcm: Vec<AudioFrame> = (0..50).map(|_| tone.next_frame().expect("pcm")).collect();
        let config = OpusConfig {
            channels,
            bitrate_bps: 32_000 * u32::from(channels),
            ..OpusConfig::default()
        };
        let mut enc = OpusEncoder::new(config).expect("encoder");
        let mut i = 0;
        let label = if channels == 1 { "mono" } else { "stereo" };
        group.bench_function(BenchmarkId::new("encode_20ms", label), |b| {
            b.iter(|| {
                i += 1;
                black_box(enc.push(&pcm[i % pcm.len()]).expect("encode"))
            })
        });
        let mut enc2 = OpusEncoder::new(config).expect("encoder");
        let packets: Vec<_> = pcm
            .iter()
            .flat_map(|f| enc2.push(f).expect("encode"))
            .collect();
        let mut dec = OpusDecoder::new(channels).expect("decoder");
        let mut j = 0;
        group.bench_function(BenchmarkId::new("decode_20ms", label), |b| {
            b.iter(|| {
                j += 1;
                let p = &packets[j % packets.len()];
                black_box(dec.decode(&p.data, p.timestamp).expect("decode"))
            })
        });
        group.bench_function(BenchmarkId::new("conceal_20ms", label), |b| {
            b.iter(|| black_box(dec.conceal(Duration::ZERO).expect("plc")))
        });
    }
    group.finish();
}

fn bench_screen(c: &mut Criterion) {
    use rtcio_media::capture::screen::{ScreenConfig, ScreenSource};
    use rtcio_media::capture::xvfb::VirtualDisplay;
    let xvfb = match VirtualDisplay::start(1920, 1080) {
        Ok(x) => x,
        Err(e) => {
            println!("screen bench skipped: {e}");
            return;
        }
    };
    let mut source = match ScreenSource::open(ScreenConfig {
        display: Some(xvfb.display().to_owned()),
        monitor: None,
        fps: 30.0,
        paced: false,
    }) {
        Ok(s) => s,
        Err(e) => {
            println!("screen bench skipped: {e}");
            return;
        }
    };
    let mut group = c.benchmark_group("screen");
    group.throughput(Throughput::Elements(1));
    group.bench_function("grab_shm_to_i420/1080p", |b| {
        b.iter(|| black_box(source.grab(Duration::ZERO).expect("grab")))
    });
    group.finish();
}

fn main() {
    pipeline_report();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args();
    bench_h264(&mut c);
    bench_convert(&mut c);
    bench_opus(&mut c);
    bench_screen(&mut c);
    c.final_summary();
}
