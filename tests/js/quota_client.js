// A grpc-js client with grpc-js's own retries on RESOURCE_EXHAUSTED (10 ms backoff): it calls Scripted.Unary
// `calls` times in a row and prints, as JSON, each call's status code and milliseconds. A server's
// grpc-retry-pushback-ms makes grpc-js wait that long before its retry (gRFC A6).
// Usage: node quota_client.js TARGET CALLS
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [target, calls] = [process.argv[2], Number(process.argv[3] || 2)];
const proto = path.join(__dirname, "..", "..", "protos", "scripted", "v1", "scripted.proto");
const scripted = grpc.loadPackageDefinition(loader.loadSync(proto)).scripted.v1;
const serviceConfig = {
  methodConfig: [{
    name: [{ service: "scripted.v1.Scripted" }],
    retryPolicy: {
      maxAttempts: 3,
      initialBackoff: "0.01s",
      maxBackoff: "0.02s",
      backoffMultiplier: 2,
      retryableStatusCodes: ["RESOURCE_EXHAUSTED"],
    },
  }],
};
const client = new scripted.Scripted(target, grpc.credentials.createInsecure(), {
  "grpc.service_config": JSON.stringify(serviceConfig),
});

function call(i) {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    client.Unary({ id: `js${i}` }, { deadline: Date.now() + 10000 }, (error) => {
      resolve({ code: error ? error.code : 0, ms: Number(process.hrtime.bigint() - started) / 1e6 });
    });
  });
}

(async () => {
  const outcomes = [];
  for (let i = 0; i < calls; i++) outcomes.push(await call(i));
  console.log(JSON.stringify(outcomes));
  client.close();
})();
