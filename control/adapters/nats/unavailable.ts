import { errorMessage, MxError } from '../../../shared/errors.js';

/** Any failure to talk to NATS, as the admin API reports it. */
export function unavailable(err: unknown): MxError {
  if (err instanceof MxError) return err;
  return new MxError('UNAVAILABLE', `NATS: ${errorMessage(err)}`);
}
