// Prints a real Chromium offer, answer and ICE candidates as JSON (seeds for fuzz/corpus, see
// make_corpus.py): node fuzz/tools/chromium_sdp.mjs > sdp.json
// Audio and video come from WebAudio and a canvas: about:blank has no getUserMedia.
import { launchChromium } from "../../tests/browser/chromium.mjs";
const launched = await launchChromium();
const browser = launched.browser ?? launched;
const ctx = browser.contexts?.()[0] ?? (await browser.newContext());
const page = await ctx.newPage();
await page.goto("about:blank");
const out = await page.evaluate(async () => {
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  const cands = [];
  a.onicecandidate = (e) => e.candidate && cands.push(e.candidate.toJSON());
  a.createDataChannel("rtcio:ctrl", { negotiated: true, id: 0 });
  const cv = document.createElement("canvas"); cv.width = 320; cv.height = 180; cv.getContext("2d").fillRect(0, 0, 10, 10);
  const ac = new AudioContext(); const osc = ac.createOscillator(); const dst = ac.createMediaStreamDestination(); osc.connect(dst); osc.start();
  const stream = new MediaStream([...dst.stream.getAudioTracks(), ...cv.captureStream(30).getVideoTracks()]);
  for (const t of stream.getTracks()) a.addTrack(t, stream);
  const offer = await a.createOffer();
  await a.setLocalDescription(offer);
  await b.setRemoteDescription(offer);
  const d2 = ac.createMediaStreamDestination(); osc.connect(d2); const s2 = d2.stream;
  for (const t of s2.getTracks()) b.addTrack(t, s2);
  const answer = await b.createAnswer();
  await b.setLocalDescription(answer);
  await new Promise((r) => setTimeout(r, 1500));
  return { offer: a.localDescription.toJSON(), answer: b.localDescription.toJSON(), cands, msid: stream.id };
});
console.log(JSON.stringify(out));
await browser.close(); await launched.cleanup?.();
