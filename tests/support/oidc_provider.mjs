// A real OpenID provider for the oidc backend's tests: panva's oidc-provider (pinned by
// scripts/install-oidc-provider) on 127.0.0.1, with its development login form. Settings
// come from the environment (PORT, ACCESS_TTL, REFRESH_TTL, VAULT_REDIRECTS); every grant
// the token endpoint answers is appended to EVENTS_FILE as one JSON line, so tests count
// refresh grants from the provider's side.
import { appendFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const dir = process.env.OIDC_PROVIDER_DIR;
const { default: Provider } = await import(
  pathToFileURL(`${dir}/node_modules/oidc-provider/lib/index.js`).href);

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const accessTtl = Number(process.env.ACCESS_TTL || 3600);
const refreshTtl = Number(process.env.REFRESH_TTL || 86400);
const resource = process.env.RESOURCE || 'urn:keyhelper:gateway';
const events = process.env.EVENTS_FILE;

function note(event, fields) {
  if (events) appendFileSync(events, JSON.stringify({ event, ...fields }) + '\n');
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'keyhelper',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token',
        'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
    {
      client_id: 'vault',
      client_secret: 'vault-client-secret',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: (process.env.VAULT_REDIRECTS || 'http://localhost:8250/oidc/callback')
        .split(','),
    },
  ],
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => ({
        scope: 'api',
        audience: indicator,
        accessTokenFormat: 'jwt',
        accessTokenTTL: accessTtl,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'api'],
  claims: { openid: ['sub'], email: ['email'], profile: ['name'] },
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, email: `${id}@example.test`, name: id }),
  }),
  ttl: {
    AccessToken: accessTtl, RefreshToken: refreshTtl, IdToken: 3600, DeviceCode: 600,
    Grant: refreshTtl, Session: 86400, Interaction: 600,
  },
  rotateRefreshToken: true,
  cookies: { keys: ['test-only-cookie-key'] },
});

provider.on('grant.success', (ctx) => note('grant.success',
  { grant_type: ctx.oidc.params.grant_type }));
provider.on('grant.error', (ctx, err) => note('grant.error',
  { grant_type: ctx.oidc.params?.grant_type, error: err.error }));
provider.on('grant.revoked', (ctx, grantId) => note('grant.revoked', {}));
provider.on('server_error', (ctx, err) => note('server_error', { message: String(err) }));

provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
