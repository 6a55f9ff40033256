"""A ClientApp that takes part honestly on chain (fedtrail's own handler) and then lies in its
Flower reply: with --node-config 'lie="cid,num_samples"' it reports another CID and ten times
its sample count, and signs the lie with the site's own key: the site's own statement, so the
ServerApp hands it to the aggregator as evidence and the site's update gets score 0
(CONTRADICTED). With 'lie="cid,num_samples,unsigned"' the lie keeps the honest reply's
signature (as if altered on the way): unattributable, so it is only reported and the site keeps
the chain's weight."""

from __future__ import annotations

from dataclasses import replace

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedtrail.flower.client_app import handle, reply_message, setup_from
from fedtrail.flower.site import sign_as, site_node

app = ClientApp()

OTHER_CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


@app.train()
def train(msg: Message, context: Context) -> Message:
    reply = handle(msg, context)
    lie = str(context.node_config.get("lie", "")).split(",")
    if reply.phase == "revealed" and ("cid" in lie or "num_samples" in lie):
        if "cid" in lie:
            reply = replace(reply, cid=OTHER_CID)
        if "num_samples" in lie:
            reply = replace(reply, num_samples=reply.num_samples * 10)
        if "unsigned" not in lie:
            reply = sign_as(site_node(setup_from(context)), reply)
    return reply_message(msg, reply)
