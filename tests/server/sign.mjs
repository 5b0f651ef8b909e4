// Channel-auth tokens computed with Node's crypto: an HMAC implementation independent of
// the core's, so the tests double as known-answer tests of the token format.
import { createHmac } from 'node:crypto';

export const SECRET = 'a-test-secret-that-is-long-enough-0123456789';

export function sign(socketId, channel, channelData, secret = SECRET) {
  const msg = channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`;
  return `${socketId}:${createHmac('sha256', secret).update(msg).digest('hex')}`;
}
