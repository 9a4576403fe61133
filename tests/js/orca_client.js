// A grpc-js client for our ORCA load reports. Usage:
//   node orca_client.js trailers TARGET  -> for each kind of call to Scripted, the endpoint-load-metrics-bin trailer
//                                          decoded by grpc-js's own xds.data.orca.v3.OrcaLoadReport, as JSON
//   node orca_client.js wrr TARGETS CALLS [oob] -> 100 warm-up calls (id "warm"), then CALLS calls (id "w") through
//                                          grpc-js's weighted_round_robin over TARGETS (comma-separated host:port);
//                                          prints the codes of the counted calls, as JSON (the servers count who
//                                          answered)
const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const proto = path.join(__dirname, "..", "..", "protos", "scripted", "v1", "scripted.proto");
const scripted = grpc.loadPackageDefinition(loader.loadSync(proto)).scripted.v1;
// grpc-js's own copy of the ORCA protos, read by protobufjs (what proto-loader reads .proto files with)
const protobuf = require("protobufjs");
const grpcJs = path.dirname(require.resolve("@grpc/grpc-js/package.json"));
const protoDirs = [path.join(grpcJs, "proto", "xds"), path.join(grpcJs, "proto", "protoc-gen-validate")];
const root = new protobuf.Root();
root.resolvePath = (origin, target) => protoDirs.map((d) => path.join(d, target)).find(fs.existsSync) || target;
root.loadSync("xds/data/orca/v3/orca_load_report.proto", { keepCase: true });
const orca = root.lookupType("xds.data.orca.v3.OrcaLoadReport");
const deadline = () => ({ deadline: Date.now() + 10000 });

function decoded(metadata) {
  const values = metadata.get("endpoint-load-metrics-bin");
  return values.length ? orca.toObject(orca.decode(values[0])) : null;
}

function unary(client) {
  return new Promise((resolve) => {
    const call = client.Unary({ id: "u" }, deadline(), () => {});
    call.on("status", (status) => resolve(decoded(status.metadata)));
  });
}

function serverStream(client) {
  return new Promise((resolve) => {
    const call = client.ServerStream({ id: "s", count: 2 }, deadline());
    call.on("data", () => {});
    call.on("status", (status) => resolve(decoded(status.metadata)));
  });
}

function clientStream(client) {
  return new Promise((resolve) => {
    const call = client.ClientStream(deadline(), () => {});
    call.on("status", (status) => resolve(decoded(status.metadata)));
    call.write({ id: "c" });
    call.write({ id: "c" });
    call.end();
  });
}

function bidiStream(client) {
  return new Promise((resolve) => {
    const call = client.BidiStream(deadline());
    call.on("data", () => {});
    call.on("status", (status) => resolve(decoded(status.metadata)));
    call.write({ id: "b" });
    call.end();
  });
}

async function trailers(target) {
  const client = new scripted.Scripted(target, grpc.credentials.createInsecure());
  const reports = {
    unary: await unary(client),
    server_stream: await serverStream(client),
    client_stream: await clientStream(client),
    bidi_stream: await bidiStream(client),
  };
  console.log(JSON.stringify(reports));
  client.close();
}

async function wrr(targets, calls, oob) {
  // grpc-js 1.14 reads this policy's fields in snake_case (C-core: camelCase, as gRFC A58 writes them)
  const config = { blackout_period: "0s", weight_update_period: "0.1s" };
  if (oob) Object.assign(config, { enable_oob_load_report: true, oob_load_reporting_period: "0.1s" });
  const client = new scripted.Scripted(`ipv4:${targets}`, grpc.credentials.createInsecure(), {
    "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ weighted_round_robin: config }] }),
  });
  const one = (id) => new Promise((resolve) => {
    client.Unary({ id }, deadline(), (error) => resolve(error ? error.code : 0));
  });
  for (let i = 0; i < 100; i++) await one("warm");
  await new Promise((resolve) => setTimeout(resolve, 300));  // weights updated twice at least
  const codes = {};
  for (let i = 0; i < calls; i++) {
    const code = await one("w");
    codes[code] = (codes[code] || 0) + 1;
  }
  console.log(JSON.stringify(codes));
  client.close();
}

const [mode, target, calls, oob] = process.argv.slice(2);
(mode === "wrr" ? wrr(target, Number(calls), oob === "oob") : trailers(target)).catch((error) => {
  console.error(error);
  process.exit(1);
});
