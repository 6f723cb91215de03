// Aldea playground: hands the microphone's samples (mono, the context's rate) to the page.
class AldeaTap extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor('aldea-tap', AldeaTap);
