/** What the fake Fly expects; shared by the Node side and workerd side. */
export const FLY_TOKEN = "FlyV1 fm2_worker-test-macaroon"
export const ORG = "acme"
export const CRON = "*/5 * * * *"
