/**
 * The "peer" of the benchmark: Socket.IO 4 doing the same job as the
 * service, the way its users would write it: a room per channel and per
 * user, `io.to(room).emit('notification', message)` (Socket.IO encodes a
 * broadcast packet once and writes it to every socket in the room).
 * WebSocket transport only, no auth (the user id comes from the handshake
 * query), default heartbeat (ping every 25 s).
 *
 *   GET  /socket.io/?EIO=4&transport=websocket&user=<id>&channels=a,b
 *   POST /channel  {channel, event_type, payload}          → io.to(`channel:<name>`)
 *   POST /user     {target_user_id, event_type, payload}   → io.to(`user:<id>`)
 *   GET  /health, GET /stats (connections and process.memoryUsage())
 *
 * Started by bench/run.ts with PORT set.
 */
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import { Server } from 'socket.io';

const port = Number(process.env.PORT ?? 0);
const app = Fastify({ logger: false, bodyLimit: 65536 });
const io = new Server(app.server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false });

io.on('connection', (socket) => {
  const query = socket.handshake.query;
  const user = typeof query.user === 'string' ? query.user : 'anonymous';
  const rooms = [`user:${user}`];
  if (typeof query.channels === 'string' && query.channels !== '') {
    for (const channel of query.channels.split(',')) rooms.push(`channel:${channel}`);
  }
  void socket.join(rooms);
});

interface SendBody {
  event_type: string;
  payload: unknown;
  channel?: string;
  target_user_id?: string;
}

function emit(room: string, body: SendBody) {
  const id = randomUUID();
  const timestamp = new Date().toISOString();
  const delivered = io.sockets.adapter.rooms.get(room)?.size ?? 0;
  if (delivered > 0) {
    io.to(room).emit('notification', {
      type: 'notification',
      id,
      occurred_at: timestamp,
      event_type: body.event_type,
      payload: body.payload,
      metadata: { source: 'http-api', priority: 'Normal' },
    });
  }
  return { success: delivered > 0, notification_id: id, delivered_to: delivered, failed: 0, queued: 0, timestamp };
}

app.post('/channel', async (request) => {
  const body = request.body as SendBody;
  return emit(`channel:${String(body.channel)}`, body);
});
app.post('/user', async (request) => {
  const body = request.body as SendBody;
  return emit(`user:${String(body.target_user_id)}`, body);
});
app.get('/health', async () => ({ status: 'healthy' }));
app.get('/stats', async () => ({ connections: io.engine.clientsCount, memory: process.memoryUsage() }));

await app.listen({ host: '127.0.0.1', port });
process.on('SIGTERM', () => {
  void io.close();
  setTimeout(() => process.exit(0), 500).unref();
});
