"""A ClientApp that takes part honestly on chain (fedtrail's own handler) and then lies in its
Flower reply: with --node-config 'lie="cid,num_samples"' it reports another CID and ten times
its sample count. The ServerApp must report the lie and give the site only the chain's weight."""

from __future__ import annotations

from dataclasses import replace

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedtrail.flower.client_app import handle, reply_message

app = ClientApp()

OTHER_CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


@app.train()
def train(msg: Message, context: Context) -> Message:
    reply = handle(msg, context)
    lie = str(context.node_config.get("lie", ""))
    if reply.phase == "revealed":
        if "cid" in lie.split(","):
            reply = replace(reply, cid=OTHER_CID)
        if "num_samples" in lie.split(","):
            reply = replace(reply, num_samples=reply.num_samples * 10)
    return reply_message(msg, reply)
