"""The real KafkaCrypto (through OpenMSIStream's wrapper of it) as a peer for openmsi's tests.

Run with the reference venv's python:
  kafkacrypto_peer.py check-chain CONFIG USAGE TOPIC
      Loads a node (openmsi- or Python-provisioned) with KafkaCrypto's own store and key
      classes, signs a leaf with the node's key, and validates the node's chain with
      KafkaCrypto's chain validation against the node's own allowlist. Prints "ok" or fails.
  serialize CONFIG BOOTSTRAP TOPIC FILE
      Encrypts FILE's bytes as a record value and b"key" as a record key with a real
      KafkaCrypto object of the node, printing {"key": HEX, "value": HEX} as JSON.
"""

import json
import logging
import pathlib
import sys
import time
import warnings

warnings.simplefilter("ignore")
logging.basicConfig(level=logging.WARNING)


def check_chain(config, usage, topic):
    import msgpack
    from kafkacrypto.chain import process_chain
    from kafkacrypto.cryptokey import CryptoKey
    from kafkacrypto.cryptostore import CryptoStore
    from kafkacrypto.utils import msgpack_default_pack

    config = pathlib.Path(config).resolve()
    import os

    os.chdir(config.parent)
    store = CryptoStore(file=str(config))
    key_file = store.load_value("cryptokey")
    key = CryptoKey(file=key_file[len("file#"):] if key_file.startswith("file#") else key_file)
    allowlist = [v for _, v in store.load_section("allowlist", defaults=False).items()]
    denylist = [v for _, v in store.load_section("denylist", defaults=False).items()]
    chains = [v for _, v in store.load_section("chains", defaults=False).items()]
    if not chains:
        raise SystemExit("no chain")
    chain = msgpack.unpackb(chains[0], raw=False)
    leaf = msgpack.packb(
        [time.time() + 3600, msgpack.packb([], use_bin_type=True), key.get_spk()],
        default=msgpack_default_pack,
        use_bin_type=True,
    )
    signed = key.sign_spk(leaf)
    full = msgpack.packb(chain + [signed], default=msgpack_default_pack, use_bin_type=True)
    process_chain(full, topic=topic, usage=usage, allowlist=allowlist, denylist=denylist)
    print("ok")


def serialize(config, bootstrap, topic, path):
    from openmsistream.kafka_wrapper.openmsistream_kafka_crypto import OpenMSIStreamKafkaCrypto

    broker = {"bootstrap.servers": bootstrap, "security.protocol": "PLAINTEXT"}
    kc = OpenMSIStreamKafkaCrypto(broker, str(pathlib.Path(config).resolve()), logging.WARNING)
    data = pathlib.Path(path).read_bytes()
    value = kc.value_serializer.serialize(topic, data)
    key = kc.key_serializer.serialize(topic, b"key")
    print(json.dumps({"key": key.hex(), "value": value.hex()}))
    sys.stdout.flush()
    kc.close()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "check-chain":
        check_chain(*args)
    elif cmd == "serialize":
        serialize(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
