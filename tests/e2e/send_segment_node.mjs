// Sends one event of each type with the real @segment/analytics-node client and prints, one JSON object a
// line, every request/response the client reports. Driven by tests/e2e/test_node_sdk.py.
// Usage: node send_segment_node.mjs <gatewayUrl> <writeKey> <runId> <backdatedIsoTimestamp>
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, run, oldTimestamp] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const analytics = new Analytics({ writeKey, host, flushAt: 1, flushInterval: 200, maxRetries: 2 })
analytics.on('http_request', (r) => out({ kind: 'request', url: r.url, headers: r.headers, body: JSON.parse(r.body) }))
analytics.on('http_response', (r) => out({ kind: 'response', url: r.url, status: r.status, body: JSON.parse(r.body) }))
analytics.on('error', (e) => out({ kind: 'error', message: String(e && (e.reason || e.message || e.code || e)) }))

const user = `node-user-${run}`
const anon = `node-anon-${run}`
const delivered = []
const done = (ctx) => { if (ctx) delivered.push(ctx.event.messageId) }

analytics.track({ userId: user, event: 'Order Completed', timestamp: new Date(oldTimestamp),
  properties: { orderId: 'o-1', revenue: 99.5, items: [{ sku: 'x', qty: 2 }] } }, (err, ctx) => done(ctx))
analytics.identify({ userId: user, traits: { email: 'grace@example.com', plan: 'team' } }, (err, ctx) => done(ctx))
analytics.page({ anonymousId: anon, category: 'Docs', name: 'Pricing', properties: { path: '/pricing' } },
  (err, ctx) => done(ctx))
analytics.screen({ userId: user, name: 'Settings', properties: { section: 'billing' } }, (err, ctx) => done(ctx))
analytics.group({ userId: user, groupId: 'org-7', traits: { name: 'Org Seven', seats: 10 } }, (err, ctx) => done(ctx))
analytics.alias({ previousId: anon, userId: user }, (err, ctx) => done(ctx))

await analytics.closeAndFlush({ timeout: 20000 })
out({ kind: 'done', delivered })
