"""BiLSTM(64) + nn.MultiheadAttention(128, 4) (self-attention, a residual add) + mean + Linear,
batch 32, T 100: fastrnn predict against torch, 1 thread each, interleaved, medians of 15.

KERAS_BACKEND=torch OPENBLAS_NUM_THREADS=1 python bench/attention.py"""
import time, torch, numpy as np, fastrnn
from torch import nn
torch.set_num_threads(1); fastrnn.set_num_threads(1)
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.rnn=nn.LSTM(32,64,batch_first=True,bidirectional=True); s.att=nn.MultiheadAttention(128,4,batch_first=True); s.fc=nn.Linear(128,5)
    def forward(s,x):
        out,_=s.rnn(x); a,_=s.att(out,out,out,need_weights=False); return s.fc((out+a).mean(1))
torch.manual_seed(0); m=M().eval()
x=torch.randn(32,100,32)
f=fastrnn.convert(m, example_input=x[:2,:7])
xn=x.numpy()
with torch.no_grad(): want=m(x).numpy()
print("max abs diff", float(np.abs(f.predict(xn)-want).max()))
tt, tf = [], []
for i in range(15):
    t0=time.perf_counter(); 
    with torch.no_grad(): m(x)
    tt.append(time.perf_counter()-t0)
    t0=time.perf_counter(); f.predict(xn); tf.append(time.perf_counter()-t0)
print(f"torch {np.median(tt)*1e3:.2f} ms, fastrnn {np.median(tf)*1e3:.2f} ms, ratio {np.median(tt)/np.median(tf):.2f}x")
