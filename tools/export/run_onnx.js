// Runs an ONNX export of mmintent (tools/export/mmintent_export.py) in ONNX Runtime for Node.js,
// on inputs written as JSON: {"order": [names], name: {"dtype": "int64"|"float32", "shape": [...],
// "data": [...]}}; prints {"logits": [[...], ...]}.
//   node tools/export/run_onnx.js MODEL.onnx INPUTS.json
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, inputsPath] = process.argv.slice(2);
  if (!model || !inputsPath) {
    console.error('usage: node run_onnx.js MODEL.onnx INPUTS.json');
    process.exit(2);
  }
  const spec = JSON.parse(fs.readFileSync(inputsPath, 'utf8'));
  const feeds = {};
  for (const name of spec.order) {
    const { dtype, shape, data } = spec[name];
    const values = dtype === 'int64' ? BigInt64Array.from(data.map(BigInt)) : Float32Array.from(data);
    feeds[name] = new ort.Tensor(dtype, values, shape);
  }
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
  const result = await session.run(feeds);
  const logits = result.logits;
  const [rows, cols] = logits.dims;
  const out = [];
  for (let i = 0; i < rows; ++i) out.push(Array.from(logits.data.slice(i * cols, (i + 1) * cols)));
  process.stdout.write(JSON.stringify({ logits: out }) + '\n');
}

main().catch((e) => {
  console.error('run_onnx: error: ' + (e && e.message ? e.message : e));
  process.exit(1);
});
