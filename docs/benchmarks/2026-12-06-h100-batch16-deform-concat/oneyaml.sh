# The configs the calls run: prod.yaml with model_id only, and the variants timed against it.
python3 .gpurun/mkyaml.py /tmp/one.yaml
python3 .gpurun/mkyaml.py /tmp/one16.yaml "model.graph_batch_sizes=[1, 8, 16]" deploy.max_batch_size=16
python3 .gpurun/mkyaml.py /tmp/dbrc16.yaml model.deform_bn_relu_concat=true
python3 .gpurun/mkyaml.py /tmp/all16.yaml model.deform_bn_relu_concat=true "model.compile_options={coordinate_descent_tuning: true}"
