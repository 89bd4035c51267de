#!/usr/bin/env node
// A small third-party MCP client for the gateway, on the official TypeScript SDK
// (@modelcontextprotocol/sdk, pinned in package.json): Streamable HTTP with a bearer token, the
// SDK's own result schemas checking every answer (tools/call's structuredContent against the
// tool's outputSchema, the 2025-11-25 task answers against the SDK's Task schemas).
//
//   ASYA_MCP_TOKEN=... node client.mjs <scenario> <gateway MCP url> [tool arguments as JSON]
//
// Scenarios (each prints one JSON object on stdout for tests-e2e/test_mcp_clients.py):
//   basics  tools/list; tools/call classify_text without and with a progress token
//   tasks   a call past its wait ("still running"), then tasks/get, tasks/list, tasks/result,
//           asya_job_result, tasks/cancel of a finished task (refused), and of a running one
//   abort   a call on a slow tool aborted (AbortSignal) at its first progress notification;
//           the session stays open until stdin closes, so the job is cancelled by the call's
//           notifications/cancelled and not by the session going away
//   foreign another principal's job (its id the argument's job_id): tasks/get, tasks/result,
//           tasks/cancel, tasks/list and asya_job_result, each as this client's token sees it
//
// An error the SDK raises while checking an answer is not caught: the script exits non-zero
// with the SDK's message on stderr, and the test shows it.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema, McpError } from "@modelcontextprotocol/sdk/types.js";

const [scenario, url, rawArguments] = process.argv.slice(2);
const token = process.env.ASYA_MCP_TOKEN;
if (!scenario || !url || !token) {
  process.stderr.write("usage: ASYA_MCP_TOKEN=... node client.mjs <scenario> <url> [json]\n");
  process.exit(2);
}
const toolArguments = rawArguments ? JSON.parse(rawArguments) : {};

async function connect() {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: "asya-e2e-ts-client", version: "0.0.0" });
  await client.connect(transport);
  return { client, transport };
}

async function disconnect({ client, transport }) {
  await transport.terminateSession();
  await client.close();
}

/** The JSON-RPC error of a refused request, as the SDK raised it. */
async function refusal(promise) {
  try {
    return { answered: await promise };
  } catch (error) {
    if (!(error instanceof McpError)) throw error;
    return { code: error.code, message: error.message };
  }
}

function summary(result) {
  return JSON.parse(result.content[0].text);
}

async function basics(session) {
  const { client, transport } = session;
  const listed = await client.listTools();
  const plain = await client.callTool({ name: "classify_text", arguments: toolArguments });
  const progress = [];
  const tracked = await client.callTool(
    { name: "classify_text", arguments: toolArguments },
    CallToolResultSchema,
    { onprogress: (p) => progress.push(p) },
  );
  return {
    protocolVersion: transport.protocolVersion,
    server: client.getServerVersion(),
    capabilities: client.getServerCapabilities(),
    tools: listed.tools.map((t) => ({
      name: t.name,
      title: t.title,
      hasOutputSchema: t.outputSchema !== undefined,
    })),
    plain,
    tracked,
    progress,
  };
}

async function tasks({ client }) {
  const tasksApi = client.experimental.tasks;
  await client.listTools(); // caches the tools' output schemas: calls are checked against them
  const first = summary(await client.callTool({ name: "slow_brief", arguments: toolArguments }));
  const working = await tasksApi.getTask(first.job_id);
  const listed = await tasksApi.listTasks();
  const payload = await tasksApi.getTaskResult(first.job_id, CallToolResultSchema);
  const again = await client.callTool({
    name: "asya_job_result",
    arguments: { job_id: first.job_id, wait: 60 },
  });
  const completed = await tasksApi.getTask(first.job_id);
  const cancelFinished = await refusal(tasksApi.cancelTask(first.job_id));
  const unknown = await refusal(tasksApi.getTask("no-such-task"));

  const second = summary(await client.callTool({ name: "slow_brief", arguments: toolArguments }));
  const cancelled = await tasksApi.cancelTask(second.job_id);
  const afterCancel = await tasksApi.getTask(second.job_id);
  return {
    first,
    working,
    listed,
    payload,
    again,
    completed,
    cancelFinished,
    unknown,
    second,
    cancelled,
    afterCancel,
  };
}

async function abort({ client }) {
  const controller = new AbortController();
  const progress = [];
  const call = client.callTool({ name: "slow", arguments: toolArguments }, CallToolResultSchema, {
    signal: controller.signal,
    onprogress: (p) => {
      progress.push(p);
      controller.abort("the e2e test gives up on this call");
    },
  });
  let outcome;
  try {
    outcome = { answered: await call };
  } catch (error) {
    if (!controller.signal.aborted) throw error;
    outcome = { rejected: String(error) };
  }
  return { ...outcome, progress };
}

async function foreign({ client }) {
  const tasksApi = client.experimental.tasks;
  const jobId = toolArguments.job_id;
  const listed = await tasksApi.listTasks();
  const result = await client.callTool({
    name: "asya_job_result",
    arguments: { job_id: jobId, wait: 1 },
  });
  return {
    get: await refusal(tasksApi.getTask(jobId)),
    result: await refusal(tasksApi.getTaskResult(jobId, CallToolResultSchema)),
    cancel: await refusal(tasksApi.cancelTask(jobId)),
    listed: listed.tasks.map((t) => t.taskId),
    jobResult: result,
  };
}

async function stdinClosed() {
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.on("end", resolve));
}

const scenarios = { basics, tasks, abort, foreign };
if (!(scenario in scenarios)) {
  process.stderr.write(`unknown scenario ${scenario}\n`);
  process.exit(2);
}
const session = await connect();
const output = await scenarios[scenario](session);
process.stdout.write(`${JSON.stringify(output)}\n`);
if (scenario === "abort") await stdinClosed();
await disconnect(session);
