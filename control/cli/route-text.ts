/** A route as one line of text, alike in `route set|rm --dry-run` and `audit ls`: "smtp:[h]:25 held tls=required verify=probe". */
export function routeText(r: { target: string; hold?: boolean | undefined; tls?: string | undefined; verify?: string | undefined }): string {
  return [r.target, r.hold ? 'held' : '', r.tls === 'required' ? 'tls=required' : '', r.verify === 'probe' ? 'verify=probe' : ''].filter(Boolean).join(' ');
}
