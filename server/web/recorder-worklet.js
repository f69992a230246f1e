// Captures microphone audio on the audio thread, low-passes and resamples it to 16 kHz, and posts
// 100 ms blocks of 16-bit PCM (s16le) to the page, which sends them over the WebSocket.
class Recorder16k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 16000;  // input samples per output sample
    this.position = 0;                // fractional read position into the input stream
    this.previous = 0;                // last low-passed input sample (for interpolation)
    this.smooth = 0;                  // one-pole low-pass state: keeps aliasing down when decimating
    this.alpha = Math.min(1, 2 * Math.PI * 7000 / sampleRate);
    this.block = new Int16Array(1600);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      this.smooth += this.alpha * (channel[i] - this.smooth);
      const current = this.smooth;
      // emit every output sample whose time falls between the previous and the current input sample
      while (this.position <= 1) {
        const value = this.previous + (current - this.previous) * this.position;
        this.block[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
        if (this.filled === this.block.length) {
          this.port.postMessage(this.block.slice().buffer, []);
          this.filled = 0;
        }
        this.position += this.ratio;
      }
      this.position -= 1;
      this.previous = current;
    }
    return true;
  }
}

registerProcessor("recorder-16k", Recorder16k);
