#!/usr/bin/env node
// Example Node.js client of Sift.
//
//   node client.js [--tls-ca ca.pem] [--query "oak coffee table"] [--deadline-ms 2000] [--batch] HOST:PORT
//
// Loads the .proto files from ../../protos at run time (no generated code), calls every RPC of the public
// services (IntentService, RelevanceService, RetrievalService, InfoService), batches included, and
// grpc.health.v1.Health/Check for the server and each of those services, each call with a deadline, then
// makes deliberately bad calls to show how an INVALID_ARGUMENT comes back. --batch makes the batch calls
// only. SIFT_API_KEY, when set, is sent as `authorization: Bearer <key>` on every call. Prints one JSON
// object on stdout; exits 1 on any failure (the failing call, its status code and details on stderr).
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
// The official grpc-node health package ships the standard health.proto; we only use its path.
const { protoPath: HEALTH_PROTO } = require('grpc-health-check');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');
const PUBLIC_SERVICES = [
  'sift.v1.IntentService',
  'sift.v1.RelevanceService',
  'sift.v1.RetrievalService',
  'sift.v1.InfoService',
];

// keepCase: fields keep their .proto names (top_k, product_id, model_version), as grpcurl prints them.
// enums: String gives "GRADE_EXACT" instead of 3; oneofs: true adds the name of the field set in a oneof.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS],
};

// Retries, as in examples/python_client.py: RESOURCE_EXHAUSTED (Sift's admission: busy; its trailing
// grpc-retry-pushback-ms says when to come back, and grpc-js waits exactly that long before the next attempt,
// or gives up on a negative value) and UNAVAILABLE (a replica stopping or unreachable). Not CANCELLED: gRPC
// core's code for calls beyond --max-pending-requests, which standard policies do not retry. retryThrottling
// stops retrying when most calls fail (each failure costs a token, each success gives back 0.1), so an
// overloaded or down cluster gets no retry storm. Every Sift call is a read, so a retry is always safe.
const SERVICE_CONFIG = {
  methodConfig: [
    {
      name: ['sift.v1.IntentService', 'sift.v1.RelevanceService', 'sift.v1.RetrievalService'].map(
        (service) => ({ service }),
      ),
      retryPolicy: {
        maxAttempts: 4,
        initialBackoff: '0.05s',
        maxBackoff: '0.5s',
        backoffMultiplier: 2,
        retryableStatusCodes: ['RESOURCE_EXHAUSTED', 'UNAVAILABLE'],
      },
    },
  ],
  retryThrottling: { maxTokens: 10, tokenRatio: 0.1 },
};
const CHANNEL_OPTIONS = { 'grpc.service_config': JSON.stringify(SERVICE_CONFIG), 'grpc.enable_retries': 1 };

function parseArgs(argv) {
  const args = { address: null, tlsCa: null, query: 'oak coffee table', deadlineMs: 2000, batchOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--tls-ca') args.tlsCa = value();
    else if (flag === '--query') args.query = value();
    else if (flag === '--deadline-ms') args.deadlineMs = Number(value());
    else if (flag === '--batch') args.batchOnly = true;
    else if (flag === '-h' || flag === '--help') {
      process.stdout.write(fs.readFileSync(__filename, 'utf8').split('\n').slice(1, 12).join('\n') + '\n');
      process.exit(0);
    } else if (args.address === null && !flag.startsWith('-')) args.address = flag;
    else throw new Error(`unexpected argument ${flag}`);
  }
  if (!args.address) throw new Error('usage: node client.js [--tls-ca ca.pem] [--query TEXT] HOST:PORT');
  return args;
}

// A failed call, with enough context to say which call it was.
class CallError extends Error {
  constructor(method, error) {
    super(`${method} failed: ${grpc.status[error.code] ?? error.code} (${error.code}): ${error.details}`);
    this.method = method;
    this.code = error.code;
    this.details = error.details;
  }
}

// One unary call as a promise, with a deadline on every call, an x-request-id the server logs and the API
// key (from SIFT_API_KEY) when there is one.
const API_KEY = process.env.SIFT_API_KEY || '';
let callCounter = 0;
function unary(client, method, request, deadlineMs) {
  const metadata = new grpc.Metadata();
  const requestId = `node-example-${process.pid}-${++callCounter}`;
  metadata.set('x-request-id', requestId);
  if (API_KEY) metadata.set('authorization', `Bearer ${API_KEY}`);
  const name = client.constructor.service[method].path; // e.g. /sift.v1.IntentService/ClassifyIntent
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + deadlineMs }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  }).catch((error) => {
    throw Object.assign(new CallError(name, error), { requestId, trailers: error.metadata });
  });
}

// google.protobuf.Struct (GetModelInfo.evaluation) arrives as {fields: {key: Value}}, each Value naming its
// set field in `kind`; this turns it into plain JSON.
function fromValue(v) {
  const value = v[v.kind];
  switch (v.kind) {
    case 'structValue':
      return fromStruct(value);
    case 'listValue':
      return (value.values || []).map(fromValue);
    case 'nullValue':
      return null;
    default: // numberValue, stringValue, boolValue
      return value;
  }
}
function fromStruct(s) {
  return Object.fromEntries(Object.entries((s && s.fields) || {}).map(([k, v]) => [k, fromValue(v)]));
}

// Several queries in one call each (a query's rewrites, say): one model run per call, answers in request
// order. A bad item fails the whole call with INVALID_ARGUMENT naming it (items[i].field).
async function batches(intent, retrieval, query, ms) {
  const queries = [query, `${query}s`, 'velvet accent chair'];
  const classified = await unary(
    intent,
    'ClassifyIntentBatch',
    { items: queries.map((q) => ({ query: q, top_k: 2 })) },
    ms,
  );
  const searched = await unary(
    retrieval,
    'SearchBatch',
    {
      items: [
        { query, k: 2 },
        { query: queries[2], k: 2, mode: 'SEARCH_MODE_DENSE' },
      ],
    },
    ms,
  );
  const embedded = await unary(
    retrieval,
    'EmbedQueryBatch',
    { items: queries.map((q) => ({ query: q })) },
    ms,
  );
  const result = {
    classify_intent_batch: {
      items: classified.items.map((item, i) => ({
        query: queries[i],
        categories: item.categories,
        source: item.source,
      })),
      model_version: classified.model_version,
    },
    search_batch: { items: searched.items.map((item) => item.hits), model_version: searched.model_version },
    embed_query_batch: { dims: embedded.items.map((item) => item.vector.length) },
  };
  try {
    await unary(intent, 'ClassifyIntentBatch', { items: [{ query }, { query: ' ' }] }, ms);
    throw new Error('ClassifyIntentBatch with an empty query succeeded; expected INVALID_ARGUMENT');
  } catch (error) {
    if (!(error instanceof CallError) || error.code !== grpc.status.INVALID_ARGUMENT) throw error;
    result.invalid_batch_item = { code_name: grpc.status[error.code], details: error.details };
  }
  return result;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const files = ['intent', 'relevance', 'retrieval', 'info'].map((n) => `sift/v1/${n}.proto`);
  const definition = protoLoader.loadSync([...files, HEALTH_PROTO], LOADER_OPTIONS);
  const proto = grpc.loadPackageDefinition(definition);

  const credentials = args.tlsCa
    ? grpc.credentials.createSsl(fs.readFileSync(args.tlsCa))
    : grpc.credentials.createInsecure();
  // One channel for all five stubs: the first client owns it, the others ride on it.
  const health = new proto.grpc.health.v1.Health(args.address, credentials, CHANNEL_OPTIONS);
  const shared = { channelOverride: health.getChannel() };
  const intent = new proto.sift.v1.IntentService(args.address, credentials, shared);
  const relevance = new proto.sift.v1.RelevanceService(args.address, credentials, shared);
  const retrieval = new proto.sift.v1.RetrievalService(args.address, credentials, shared);
  const info = new proto.sift.v1.InfoService(args.address, credentials, shared);
  const ms = args.deadlineMs;
  const result = { address: args.address, query: args.query };

  // Health per service: "" is the whole server; a Kubernetes gRPC probe sends one of these names.
  result.health = {};
  for (const service of ['', ...PUBLIC_SERVICES]) {
    result.health[service] = (await unary(health, 'Check', { service }, ms)).status;
  }
  if (args.batchOnly) {
    result.batches = await batches(intent, retrieval, args.query, ms);
    for (const client of [intent, relevance, retrieval, info, health]) client.close();
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    return;
  }

  const classified = await unary(intent, 'ClassifyIntent', { query: args.query, top_k: 3 }, ms);
  result.intent = {
    categories: classified.categories,
    source: classified.source,
    rule: classified.rule,
    model_version: classified.model_version,
  };

  const search = await unary(retrieval, 'Search', { query: args.query, k: 5 }, ms);
  result.search = { hits: search.hits, model_version: search.model_version };

  const embedded = await unary(retrieval, 'EmbedQuery', { query: args.query }, ms);
  const norm = Math.sqrt(embedded.vector.reduce((sum, x) => sum + x * x, 0));
  result.embed_query = { dim: embedded.vector.length, norm, head: embedded.vector.slice(0, 4) };

  // Search again by the raw vector, filtered to the category of the best text hit.
  const category = search.hits.length ? search.hits[0].category : '';
  const byVector = await unary(
    retrieval,
    'Search',
    { vector: { values: embedded.vector }, k: 3, category },
    ms,
  );
  result.search_by_vector = { category, hits: byVector.hits };
  // The same query text in dense mode (the bundle's default may be lexical or hybrid) finds what its
  // vector finds.
  const dense = await unary(
    retrieval,
    'Search',
    { query: args.query, k: 3, category, mode: 'SEARCH_MODE_DENSE' },
    ms,
  );
  result.search_dense = { hits: dense.hits };

  // Candidates are either product ids the bundle knows or free titles (the oneof `item`).
  const candidates = [
    ...search.hits.slice(0, 2).map((h) => ({ product_id: h.product_id })),
    { title: args.query },
    { title: 'Nonstick Frying Pan' },
  ];
  const scored = await unary(relevance, 'ScoreRelevance', { query: args.query, candidates }, ms);
  result.relevance = {
    scores: scored.scores.map((score, i) => ({ candidate: candidates[i], ...score })),
    model_version: scored.model_version,
  };

  result.batches = await batches(intent, retrieval, args.query, ms);

  const model = await unary(info, 'GetModelInfo', {}, ms);
  result.model_info = {
    bundle_version: model.bundle_version,
    schema_version: model.schema_version,
    created_at: model.created_at,
    code_version: model.code_version,
    components: model.components.map(({ name, file, description }) => ({ name, file, description })),
    num_labels: model.labels.length,
    embedding_dim: model.embedding_dim,
    num_products: Number(model.num_products),
    evaluation: fromStruct(model.evaluation),
    model_version: model.model_version,
  };

  // A deliberately bad call: k above the server's max_k. The server answers INVALID_ARGUMENT with a message
  // that starts with the field name, and echoes our x-request-id in the trailers.
  try {
    await unary(retrieval, 'Search', { query: args.query, k: 5000 }, ms);
    throw new Error('Search with k=5000 succeeded; expected INVALID_ARGUMENT');
  } catch (error) {
    if (!(error instanceof CallError) || error.code !== grpc.status.INVALID_ARGUMENT) throw error;
    result.invalid_argument = {
      method: error.method,
      code: error.code,
      code_name: grpc.status[error.code],
      details: error.details,
      request_id: error.requestId,
      echoed_request_id: (error.trailers && error.trailers.get('x-request-id')[0]) || null,
    };
  }

  for (const client of [intent, relevance, retrieval, info, health]) client.close();
  const unhealthy = Object.entries(result.health).filter(([, status]) => status !== 'SERVING');
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  if (unhealthy.length) {
    throw new Error(`not SERVING: ${unhealthy.map(([s, st]) => `${s || '""'}=${st}`).join(', ')}`);
  }
}

main().catch((error) => {
  process.stderr.write(`${error instanceof CallError ? '' : 'error: '}${error.message}\n`);
  process.exit(1);
});
