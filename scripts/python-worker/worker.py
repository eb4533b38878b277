#!/usr/bin/env python3
"""An Ambient worker in Python, written from docs/protocol.md ("Writing a worker") and
docs/formats.md (key files): ZeroMQ DEALER with CURVE, the 120-byte header, XXH64, chunked
LZ4, the JSON bodies and the worker's state machine are implemented here. The arithmetic
(building the run's model and data, loading a state, applying an update with the optimiser,
computing a shard's gradient) is delegated to the `ambient-compute` child process, the same
library code as `ambient worker`: bitwise equal weights then show that the protocol
implementation is right, not that Python computes the same floats (see README.md here).

usage: worker.py --connect tcp://127.0.0.1:PORT --key W.key --server-key coordinator.pub
                 --name NAME --compute PATH/ambient-compute
"""
import argparse, json, os, random, socket, struct, subprocess, sys, time
import zmq

# ---- XXH64 (seed 0): the header, payload and parameter checksums -------------------------
M64 = (1 << 64) - 1
P1, P2, P3, P4, P5 = (11400714785074694791, 14029467366897019727, 1609587929392839161,
                      9650029242287828579, 2870177450012600261)

def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64

def _round(acc, lane):
    return (_rotl((acc + lane * P2) & M64, 31) * P1) & M64

def xxh64(data):
    n, i = len(data), 0
    if n >= 32:
        v1, v2, v3, v4 = (P1 + P2) & M64, P2, 0, (-P1) & M64
        stripes = n // 32
        for a, b, c, d in struct.iter_unpack('<4Q', memoryview(data)[:stripes * 32]):
            v1 = _round(v1, a); v2 = _round(v2, b); v3 = _round(v3, c); v4 = _round(v4, d)
        i = stripes * 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & M64
        for v in (v1, v2, v3, v4):
            h = ((h ^ _round(0, v)) * P1 + P4) & M64
    else:
        h = P5
    h = (h + n) & M64
    while i + 8 <= n:
        (k,) = struct.unpack_from('<Q', data, i)
        h = (_rotl(h ^ _round(0, k), 27) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        (k,) = struct.unpack_from('<I', data, i)
        h = (_rotl(h ^ ((k * P1) & M64), 23) * P2 + P3) & M64
        i += 4
    while i < n:
        h = (_rotl(h ^ ((data[i] * P5) & M64), 11) * P1) & M64
        i += 1
    h ^= h >> 33; h = (h * P2) & M64; h ^= h >> 29; h = (h * P3) & M64; h ^= h >> 32
    return h

BLOCK_BYTES = 8192 * 4   # ParameterChecksum.blockElements Float32 values

def parameter_checksum(params):
    """XXH64 of the little-endian XXH64s of each 8192-value block (cluster protocol 2)."""
    view = memoryview(params)
    hashes = [xxh64(view[o:o + BLOCK_BYTES]) for o in range(0, len(view), BLOCK_BYTES)]
    return xxh64(struct.pack('<%dQ' % len(hashes), *hashes))

# ---- Chunked LZ4 (codecs lz4 = 2, shuffle-lz4 = 3) and raw (1) ------------------------------
class ProtocolError(Exception):
    pass

def lz4_block(src, size):
    """Decompresses one LZ4 block that must yield exactly `size` bytes."""
    dst, i, n = bytearray(), 0, len(src)
    while True:
        if i >= n:
            raise ProtocolError('LZ4 block ends early')
        token = src[i]; i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                b = src[i]; i += 1; lit += b
                if b != 255:
                    break
        dst += src[i:i + lit]; i += lit
        if i == n:
            break
        off = src[i] | src[i + 1] << 8; i += 2
        length = token & 15
        if length == 15:
            while True:
                b = src[i]; i += 1; length += b
                if b != 255:
                    break
        length += 4
        if off == 0 or off > len(dst):
            raise ProtocolError('LZ4 offset out of range')
        start = len(dst) - off
        while length > 0:
            take = min(length, off)
            dst += dst[start:start + take]
            start += take; length -= take
        if len(dst) > size:
            raise ProtocolError('LZ4 block too long')
    if len(dst) != size:
        raise ProtocolError('LZ4 block has %d bytes, expected %d' % (len(dst), size))
    return bytes(dst)

def chunked_lz4(payload, raw_bytes, shuffle):
    if len(payload) < 12:
        raise ProtocolError('container too short')
    stored_raw, chunk = struct.unpack_from('<QI', payload, 0)
    if stored_raw != raw_bytes or chunk == 0 or chunk % 4 or chunk > 16 << 20:
        raise ProtocolError('bad container header')
    out, at, start = bytearray(), 12, 0
    while start < raw_bytes:
        n = min(chunk, raw_bytes - start)
        (word,) = struct.unpack_from('<I', payload, at); at += 4
        length = word & 0x7FFFFFFF
        data = payload[at:at + length]; at += length
        if len(data) != length:
            raise ProtocolError('chunk truncated')
        if word & 0x80000000:
            if length != n:
                raise ProtocolError('stored chunk of the wrong size')
            piece = data
        else:
            piece = lz4_block(data, n)
            if shuffle:   # planes of byte 0, byte 1, ... of each 4-byte element
                m = n // 4
                piece = bytes(piece[j * m + e] for e in range(m) for j in range(4))
        out += piece
        start += n
    if at != len(payload):
        raise ProtocolError('bytes after the last chunk')
    return bytes(out)

def decode_tensor(codec, payload, count):
    if codec == 1:
        if len(payload) != 4 * count:
            raise ProtocolError('raw payload of the wrong size')
        return bytes(payload)
    if codec in (2, 3):
        return chunked_lz4(payload, 4 * count, codec == 3)
    raise ProtocolError('codec %d is not implemented by this worker' % codec)

# ---- Messages -------------------------------------------------------------------------------
HEADER = struct.Struct('<IHHIIQQIIQQIHHQQQQQQ')   # the 112 bytes before the header checksum
FIELDS = ('magic', 'version', 'type', 'flags', 'generation', 'runID', 'coordinatorIncarnation',
          'senderID', 'shard', 'senderIncarnation', 'step', 'shardCount', 'codec', 'reserved',
          'parameterVersion', 'keyOffset', 'keyCount', 'rawLength', 'encodedLength', 'payloadChecksum')
MAGIC = 0x57424D41
HELLO, WELCOME, REJECT, HEARTBEAT, ASSIGN, GRADIENT, PARAMETERS, UPDATE, CHECKSUM_REPORT = range(1, 10)
SHUTDOWN, ERROR = 12, 13
MAX_INDEX = (1 << 63) - 1

def encode(fields, payload=b'', meta=b''):
    h = dict(magic=MAGIC, version=2, flags=0, generation=0, runID=0, coordinatorIncarnation=0,
             senderID=0, shard=0, senderIncarnation=0, step=0, shardCount=0, codec=0, reserved=0,
             parameterVersion=0, keyOffset=0, keyCount=0)
    h.update(fields)
    h['encodedLength'] = len(payload)
    if h['codec'] == 0:
        h['rawLength'] = len(payload)
    h['payloadChecksum'] = xxh64(payload + meta)
    head = HEADER.pack(*(h[f] for f in FIELDS))
    head += struct.pack('<Q', xxh64(head))
    return [head, payload, meta] if meta else [head, payload]

def decode(frames):
    """Validates a message as docs/protocol.md's 'What the decoder rejects' says."""
    if len(frames) not in (2, 3):
        raise ProtocolError('%d frames' % len(frames))
    head = frames[0]
    if len(head) != 120:
        raise ProtocolError('header of %d bytes' % len(head))
    h = dict(zip(FIELDS, HEADER.unpack_from(head)))
    if h['magic'] != MAGIC or h['version'] != 2:
        raise ProtocolError('not an Ambient version 2 message')
    if struct.unpack_from('<Q', head, 112)[0] != xxh64(head[:112]):
        raise ProtocolError('header checksum')
    if h['reserved'] or h['flags'] & 0xFFFE:
        raise ProtocolError('reserved field or unknown must-understand flags')
    if h['step'] > MAX_INDEX or h['parameterVersion'] > MAX_INDEX or h['keyOffset'] + h['keyCount'] > MAX_INDEX:
        raise ProtocolError('counter out of range')
    payload, meta = frames[1], frames[2] if len(frames) == 3 else b''
    if len(payload) != h['encodedLength']:
        raise ProtocolError('payload length')
    # Flag bit 0, unchecked payload: the sender left the checksum out (0) because the link is
    # sealed. This worker's link is always CURVE, which authenticates every message.
    if h['flags'] & 1:
        if h['payloadChecksum'] != 0:
            raise ProtocolError('payload checksum under the unchecked flag')
    elif xxh64(payload + meta) != h['payloadChecksum']:
        raise ProtocolError('payload checksum')
    return h, payload, meta

def body(obj):
    return json.dumps(obj, sort_keys=True, separators=(',', ':')).encode()

# ---- The numerics, in a child process ------------------------------------------------------
class Compute:
    def __init__(self, path):
        self.p = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def call(self, request, data=b''):
        j = json.dumps(request).encode()
        self.p.stdin.write(struct.pack('<I', len(j)) + j + struct.pack('<Q', len(data)) + data)
        self.p.stdin.flush()
        (n,) = struct.unpack('<I', self.p.stdout.read(4))
        reply = json.loads(self.p.stdout.read(n))
        (m,) = struct.unpack('<Q', self.p.stdout.read(8))
        out = self.p.stdout.read(m)
        if reply.get('error'):
            raise ProtocolError('ambient-compute: ' + reply['error'])
        return reply, out

# ---- The worker ------------------------------------------------------------------------------
def read_key_file(path):
    pairs = {}
    for line in open(path, encoding='utf-8'):
        if line.startswith('#'):
            continue
        parts = line.strip().split(' ', 1)
        if len(parts) == 2:
            pairs[parts[0]] = parts[1].strip()
    if len(pairs.get('public', '')) != 40 or len(pairs.get('secret', '')) != 40:
        sys.exit('%s is not an Ambient key file' % path)
    return pairs['public'], pairs['secret']

def read_public_key(path):
    keys = [l.strip() for l in open(path, encoding='utf-8') if l.strip() and not l.startswith('#')]
    if len(keys) != 1 or len(keys[0]) != 40:
        sys.exit('%s must hold exactly one public key' % path)
    return keys[0]

class Worker:
    def __init__(self, args):
        self.args = args
        self.incarnation = random.randrange(1, 1 << 64)
        ctx = zmq.Context()
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, ('%s/%x' % (args.name, self.incarnation)).encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        public, secret = read_key_file(args.key)
        self.sock.curve_publickey = public.encode()
        self.sock.curve_secretkey = secret.encode()
        self.sock.curve_serverkey = read_public_key(args.server_key).encode()
        self.sock.connect(args.connect)
        self.compute = Compute(args.compute)
        self.built_for = None
        self.shards_computed = 0
        self.reset()

    def reset(self):
        self.welcome = None
        self.coordinator_incarnation = 0
        self.version = None        # None until parameters are loaded
        self.update = {}           # chunk offset -> decoded bytes of the update in progress
        self.backoff, self.last_probe = 0.25, -1e9

    def log(self, *what):
        print('python-worker %s:' % self.args.name, *what, file=sys.stderr, flush=True)

    def header(self, **fields):
        w = self.welcome or {}
        base = dict(runID=w.get('runID', 0), coordinatorIncarnation=self.coordinator_incarnation,
                    senderID=w.get('workerID', 0), senderIncarnation=self.incarnation,
                    shardCount=w.get('shardCount', 0))
        base.update(fields)
        return base

    def send(self, frames):
        self.sock.send_multipart(frames)

    def hello(self, phase):
        b = dict(phase=phase, workerName=self.args.name, host=socket.gethostname(), pid=os.getpid(),
                 protocolVersion=2, threads=1)
        if phase == 'join':
            b['runID'] = self.welcome['runID']
            b['datasetHash'] = self.dataset_hash
        self.send(encode(dict(self.header(), type=HELLO), body(b)))

    def run(self):
        last_heard = time.monotonic()
        next_heartbeat = 0
        while True:
            now = time.monotonic()
            if self.welcome is None:
                if now - self.last_probe >= self.backoff:
                    self.hello('probe')
                    self.last_probe, self.backoff = now, min(self.backoff * 2, 4)
                if now - last_heard > self.args.max_reconnect:
                    sys.exit('no welcome for %d s' % self.args.max_reconnect)
            else:
                if now >= next_heartbeat:
                    self.send(encode(dict(self.header(), type=HEARTBEAT)))
                    next_heartbeat = now + self.welcome['heartbeatInterval']
                if now - last_heard > self.welcome['coordinatorTimeout']:
                    self.log('coordinator silent: registering again')
                    self.reset()
            if not self.sock.poll(50):
                continue
            frames = self.sock.recv_multipart()
            try:
                h, payload, meta = decode(frames)
            except ProtocolError as e:
                self.log('dropped a message:', e)
                continue
            last_heard = time.monotonic()
            if self.coordinator_incarnation and h['coordinatorIncarnation'] != self.coordinator_incarnation and self.welcome:
                self.log('coordinator restarted: registering again')
                self.reset()
                continue
            done = self.handle(h, payload, meta)
            if done is not None:
                return done

    def handle(self, h, payload, meta):
        t = h['type']
        if t == WELCOME and self.welcome is None:
            w = json.loads(payload)
            self.welcome, self.coordinator_incarnation = w, h['coordinatorIncarnation']
            key = (w['runID'], bytes(w['workloadSpec']))
            if self.built_for != key:
                reply, _ = self.compute.call({'op': 'build'}, payload)
                self.dataset_hash, self.n, self.built_for = reply['datasetHash'], reply['parameterCount'], key
            if self.dataset_hash != w['datasetHash']:
                sys.exit('this worker\'s data hash %s differs from the coordinator\'s' % self.dataset_hash)
            offsets = w['chunkOffsets']
            self.chunks = [(o, (offsets[i + 1] if i + 1 < len(offsets) else self.n) - o) for i, o in enumerate(offsets)]
            self.hello('join')
        elif t == PARAMETERS and self.welcome:
            m = json.loads(meta)
            state = decode_tensor(h['codec'], payload, h['keyCount'])
            params = state[:4 * m['counts'][0]]
            if parameter_checksum(params) != m['parameterChecksum']:
                raise SystemExit('parameters do not match their checksum')
            reply, _ = self.compute.call({'op': 'load', 'sections': m['sections'], 'counts': m['counts'],
                                          'counters': m['counters']}, state)
            self.version, self.checksum, self.update = reply['version'], reply['checksum'], {}
            self.log('joined at version', self.version)
        elif t == UPDATE and self.version is not None:
            if h['parameterVersion'] != self.version + 1:
                return self.report('update to version %d at version %d' % (h['parameterVersion'], self.version))
            self.update[h['keyOffset']] = decode_tensor(h['codec'], payload, h['keyCount'])
            if len(self.update) == len(self.chunks):
                full = b''.join(self.update[o] for o, _ in self.chunks)
                reply, _ = self.compute.call({'op': 'apply'}, full)
                self.version, self.checksum, self.update = reply['version'], reply['checksum'], {}
        elif t == ASSIGN and self.version is not None:
            a = json.loads(payload)
            if a['parameterVersion'] != self.version:
                return self.report('assigned version %d at version %d' % (a['parameterVersion'], self.version))
            if a['parameterChecksum'] != self.checksum:
                return self.report('parameter checksum differs from the assignment\'s')
            for k in a['shards']:
                reply, g = self.compute.call({'op': 'gradient', 'step': a['step'], 'shard': k,
                                              'chunkOffsets': [o for o, _ in self.chunks]})
                for i, (o, c) in enumerate(self.chunks):
                    fields = self.header(type=GRADIENT, generation=h['generation'], step=a['step'], shard=k,
                                         coordinatorIncarnation=h['coordinatorIncarnation'],
                                         parameterVersion=a['parameterVersion'], codec=1, keyOffset=o,
                                         keyCount=c, rawLength=4 * c)
                    last = i == len(self.chunks) - 1
                    self.send(encode(fields, g[4 * o:4 * (o + c)], body(reply['meta']) if last else b''))
                self.shards_computed += 1
        elif t == REJECT:
            r = json.loads(payload)
            if not r.get('rejoin', True):
                sys.exit('the coordinator refused this worker: ' + r.get('reason', '?'))
            self.log('asked to register again:', r.get('reason'))
            self.reset()
        elif t == SHUTDOWN:
            s = json.loads(payload)
            self.log('shutdown: %s; computed %d shards' % (s.get('reason'), self.shards_computed))
            return 0 if s.get('success') else 1
        return None

    def report(self, reason):
        self.log('out of sync:', reason)
        b = dict(parameterVersion=self.version or 0, checksum=0, expected=0, reason=reason)
        self.send(encode(dict(self.header(), type=CHECKSUM_REPORT), body(b)))

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--connect', required=True)
    p.add_argument('--key', required=True, help="this worker's key file (ambient keys generate)")
    p.add_argument('--server-key', required=True, help="the coordinator's .pub file")
    p.add_argument('--name', default='python-%d' % os.getpid())
    p.add_argument('--compute', required=True, help='path of the ambient-compute binary')
    p.add_argument('--max-reconnect', type=float, default=120)
    args = p.parse_args()
    if not zmq.has('curve'):
        sys.exit('this libzmq has no CURVE support')
    assert xxh64(b'') == 0xEF46DB3751D8E999
    sys.exit(Worker(args).run())

if __name__ == '__main__':
    main()
