"""mkyaml.py OUT [model.KEY=YAML | deploy.KEY=YAML ...]: configs/prod.yaml with model_id /tmp/hub and the overrides
(model.* in args.model, deploy.* in BackgroundRemover's user_config)."""
import sys
import yaml

out, overrides = sys.argv[1], sys.argv[2:]
config = yaml.safe_load(open("configs/prod.yaml"))
app = config["applications"][0]
app["args"]["model"]["model_id"] = "/tmp/hub"
remover = next(d for d in app["deployments"] if d["name"] == "BackgroundRemover")
for item in overrides:
    key, value = item.split("=", 1)
    scope, name = key.split(".", 1)
    target = app["args"]["model"] if scope == "model" else remover["user_config"]
    target[name] = yaml.safe_load(value)
yaml.safe_dump(config, open(out, "w"), sort_keys=False)
