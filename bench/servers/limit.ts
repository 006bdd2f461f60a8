/**
 * The "limit" of the benchmark: the least a Node process can do for the
 * same job as the service, built on the raw `ws` library and Fastify.
 * No auth (the user id comes from `?user=`), no tenancy, no limits, no
 * heartbeats, no backpressure policy; a notification is serialised once and
 * the same bytes are sent to every target socket.
 *
 *   GET  /ws?user=<id>&channels=a,b   WebSocket; subscribed to the channels at connect
 *   POST /channel  {channel, event_type, payload}          → every socket on the channel
 *   POST /user     {target_user_id, event_type, payload}   → every socket of the user
 *   POST /api/v1/notifications/send   the same as /user: the bare route of the HTTP scenario
 *   GET  /health, GET /stats (connections and process.memoryUsage())
 *
 * Messages have the service's notification shape and size, so clients read
 * the same bytes from every server. Started by bench/run.ts with PORT set.
 */
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.env.PORT ?? 0);
const users = new Map<string, Set<WebSocket>>();
const channels = new Map<string, Set<WebSocket>>();
let connections = 0;

interface Member {
  benchUser: string;
  benchChannels: string[];
}

function join(map: Map<string, Set<WebSocket>>, key: string, ws: WebSocket): void {
  let set = map.get(key);
  if (set === undefined) map.set(key, (set = new Set()));
  set.add(ws);
}

function leave(map: Map<string, Set<WebSocket>>, key: string, ws: WebSocket): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(ws);
  if (set.size === 0) map.delete(key);
}

function onClose(this: WebSocket): void {
  const member = this as unknown as Member;
  connections--;
  leave(users, member.benchUser, this);
  for (const channel of member.benchChannels) leave(channels, channel, this);
}

function onError(): void {
  // a peer reset; 'close' follows
}

const wss = new WebSocketServer({ noServer: true, clientTracking: false, perMessageDeflate: false });
const app = Fastify({ logger: false, bodyLimit: 65536 });

app.server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const user = url.searchParams.get('user');
  if (url.pathname !== '/ws' || !user) {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  const wanted = url.searchParams.get('channels');
  wss.handleUpgrade(req, socket, head, (ws) => {
    const member = ws as unknown as Member;
    member.benchUser = user;
    member.benchChannels = wanted ? wanted.split(',') : [];
    connections++;
    join(users, user, ws);
    for (const channel of member.benchChannels) join(channels, channel, ws);
    ws.on('close', onClose);
    ws.on('error', onError);
  });
});

interface SendBody {
  event_type: string;
  payload: unknown;
  channel?: string;
  target_user_id?: string;
}

const TEXT = { binary: false } as const;

function fanOut(targets: Set<WebSocket> | undefined, body: SendBody) {
  const id = randomUUID();
  const timestamp = new Date().toISOString();
  let delivered = 0;
  if (targets !== undefined && targets.size > 0) {
    const bytes = Buffer.from(
      JSON.stringify({
        type: 'notification',
        id,
        occurred_at: timestamp,
        event_type: body.event_type,
        payload: body.payload,
        metadata: { source: 'http-api', priority: 'Normal' },
      }),
    );
    for (const ws of targets) {
      ws.send(bytes, TEXT);
      delivered++;
    }
  }
  return { success: delivered > 0, notification_id: id, delivered_to: delivered, failed: 0, queued: 0, timestamp };
}

app.post('/channel', async (request) => {
  const body = request.body as SendBody;
  return fanOut(channels.get(String(body.channel)), body);
});

const toUser = async (request: { body: unknown }) => {
  const body = request.body as SendBody;
  return fanOut(users.get(String(body.target_user_id)), body);
};
app.post('/user', toUser);
app.post('/api/v1/notifications/send', toUser);

app.get('/health', async () => ({ status: 'healthy' }));
app.get('/stats', async () => ({ connections, memory: process.memoryUsage() }));

await app.listen({ host: '127.0.0.1', port });
process.on('SIGTERM', () => {
  app.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
