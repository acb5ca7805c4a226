# After the calls, 2-core machine (CPU, torch 2.14.1): does the real BiRefNet architecture (random weights) trace as one
# graph with no breaks, as torch.compile(fullgraph=True).aot_compile() needs?
# Does the real BiRefNet architecture trace as one graph (fullgraph), as torch.compile(...).aot_compile needs?
import sys, time, torch
sys.path.insert(0, "scripts")
import birefnet_random
from serve_app.model.core import final_logits
from serve_app.model.attention import ContiguousAttentionMasks
network = birefnet_random.build().eval()
def fwd(batch):
    with ContiguousAttentionMasks():
        return final_logits(network(batch))
example = torch.zeros((1, 3, 512, 512))
t = time.perf_counter()
with torch.inference_mode():
    explanation = torch._dynamo.explain(fwd)(example)
print("explain s", round(time.perf_counter() - t, 1))
print("graphs", explanation.graph_count, "graph breaks", explanation.graph_break_count)
for reason in explanation.break_reasons[:10]:
    print("BREAK:", str(reason.reason)[:300], "|", [str(f)[:150] for f in reason.user_stack[-2:]])
